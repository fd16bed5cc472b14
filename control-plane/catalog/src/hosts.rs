//! [`Hosts`]: how an index's `host` — the address clients dial for its data plane — is formed.
//!
//! In the embedded mode every index has its own data-plane port (as with Pinecone Local), so
//! its host is `advertise_host:port`. In split mode one data-plane address serves every index,
//! and requests are routed by the host name they were sent to (HTTP/2 `:authority`, HTTP/1.1
//! `Host`), as Pinecone's own `<index>-<project>.svc…` hosts work behind wildcard DNS: each index
//! gets a host from a [`HostTemplate`] such as `{index}.{project}.data.larch.example:5081`.

use std::fmt;

use crate::IndexKey;

/// How index hosts are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Each index on its own port: `advertise_host:port` (embedded mode).
    PerPort {
        /// The host part, e.g. `127.0.0.1`.
        advertise_host: String,
    },
    /// One data-plane address for all indexes, each index with its own host name.
    Template(HostTemplate),
}

impl Hosts {
    /// The host of index `key` served on `port` (ignored by templates).
    pub fn host(&self, key: &IndexKey, port: u16) -> String {
        match self {
            Hosts::PerPort { advertise_host } => host_port(advertise_host, port),
            Hosts::Template(template) => template.render(key),
        }
    }
}

/// A host name pattern with `{index}` and `{project}`, optionally ending in `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTemplate(String);

impl HostTemplate {
    /// Checks a template: both placeholders, otherwise only host-name characters
    /// (`a-z 0-9 . -`), no scheme or path, and an optional numeric `:port` at the end.
    pub fn parse(template: &str) -> Result<HostTemplate, String> {
        let template = template.trim();
        for placeholder in ["{index}", "{project}"] {
            if !template.contains(placeholder) {
                return Err(format!(
                    "{template:?} lacks {placeholder}: every index needs a host of its own, e.g. \
                     \"{{index}}.{{project}}.data.example.com:5081\""
                ));
            }
        }
        let bare = template.replace("{index}", "i").replace("{project}", "p");
        let not_a_pattern = || {
            format!(
                "{template:?} is not a host name pattern: use lowercase letters, digits, '.' and \
                 '-' around {{index}} and {{project}}, no scheme or path"
            )
        };
        if bare.contains('/') {
            return Err(not_a_pattern());
        }
        let (name, port) = match bare.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (bare.as_str(), None),
        };
        if let Some(port) = port
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(format!(
                "{template:?}: {port:?} is not a port number (1-65535)"
            ));
        }
        let valid_name = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && !name.ends_with(['.', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        if !valid_name {
            return Err(not_a_pattern());
        }
        Ok(HostTemplate(template.to_owned()))
    }

    /// The host of index `key`.
    pub fn render(&self, key: &IndexKey) -> String {
        self.0
            .replace("{index}", key.name().as_str())
            .replace("{project}", key.project())
    }
}

impl fmt::Display for HostTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `host:port`, with IPv6 literals in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IndexName;

    fn key(project: &str, name: &str) -> IndexKey {
        IndexKey::new(project, IndexName::new(name).expect("name")).expect("key")
    }

    #[test]
    fn templates_render_each_index_its_own_host() {
        let template = HostTemplate::parse("{index}.{project}.data.larch.test:5081").expect("ok");
        assert_eq!(
            template.render(&key("default", "movies")),
            "movies.default.data.larch.test:5081"
        );
        let hosts = Hosts::Template(template);
        assert_ne!(
            hosts.host(&key("default", "movies"), 0),
            hosts.host(&key("team", "movies"), 0)
        );
        let per_port = Hosts::PerPort {
            advertise_host: "::1".into(),
        };
        assert_eq!(per_port.host(&key("default", "a"), 5081), "[::1]:5081");
        assert!(HostTemplate::parse("{index}-{project}.svc").is_ok());
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("{index}.data.test", "lacks {project}"),
            ("{project}.data.test", "lacks {index}"),
            ("http://{index}.{project}.test", "not a host name pattern"),
            ("{index}.{project}.test/x", "not a host name pattern"),
            ("{index}.{project}.Test", "not a host name pattern"),
            ("{index}.{project}.test:0", "not a port number"),
            ("{index}.{project}.test:http", "not a port number"),
        ] {
            let err = HostTemplate::parse(bad).expect_err(bad);
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }
}
