"""Checks of the container files that no linter knows about; run by docker/validate.sh.

    python docker/validate.py dockerfiles docker/Dockerfile docker/Dockerfile.prebuilt
    docker-compose -f docker/compose.yaml config --format json | python docker/validate.py compose docker/Dockerfile

Prints one line per check and exits 1 if any failed. Standard library only.
"""

import json
import sys

MARKER = "# ---- runtime stage"
CONTROL_PORT = 5080
ADMIN_PORT = 9090


def instructions(text):
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    return result


def runtime_stage(text):
    """The final stage: the instructions after the last FROM."""
    steps = instructions(text)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def image_env(stage):
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in args.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def port_range(spec):
    first, _, last = spec.partition("-")
    return set(range(int(first), int(last or first) + 1))


def numeric_non_root(user):
    uid, _, gid = str(user).partition(":")
    return uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit())


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what, detail=""):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"))
        self.failed += not ok

    def dockerfiles(self, paths):
        texts = {path: open(path, encoding="utf-8").read() for path in paths}
        tails = {path: text[text.find(MARKER):] for path, text in texts.items()}
        for path, text in texts.items():
            self.check(MARKER in text, f"{path} has the runtime stage marker")
        first = paths[0]
        for path in paths[1:]:
            self.check(
                tails[path] == tails[first],
                f"{path}'s runtime stage is identical to {first}'s",
                "edit both files the same way below the marker",
            )
        for path, text in texts.items():
            stage = runtime_stage(text)
            keywords = dict(stage)
            env = image_env(stage)
            self.check(
                keywords.get("FROM", "").split()[0] == "scratch",
                f"{path}: runtime stage is FROM scratch",
                keywords.get("FROM", ""),
            )
            self.check(
                numeric_non_root(keywords.get("USER", "")),
                f"{path}: USER is a numeric non-root uid",
                keywords.get("USER", "(none)"),
            )
            self.check(
                keywords.get("ENTRYPOINT") == '["larch"]' and keywords.get("CMD") == '["serve"]',
                f'{path}: ENTRYPOINT ["larch"], CMD ["serve"]',
            )
            self.check(
                env.get("LARCH_CONTROL_ADDR", "").startswith("0.0.0.0:"),
                f"{path}: LARCH_CONTROL_ADDR listens on every interface",
                env.get("LARCH_CONTROL_ADDR", "(unset)"),
            )
            exposed = [p for k, a in stage if k == "EXPOSE" for p in a.split()]
            ranges = [p for p in exposed if "-" in p]
            self.check(
                not ranges,
                f"{path}: EXPOSE lists single ports (Docker 29 rejects images with ranges)",
                " ".join(ranges),
            )
            wanted = {CONTROL_PORT, ADMIN_PORT} | port_range(env.get("LARCH_DATA_PORTS", "0"))
            got = {int(p.split("/")[0]) for p in exposed if "-" not in p}
            self.check(
                got == wanted,
                f"{path}: EXPOSE covers {CONTROL_PORT}, {ADMIN_PORT} and LARCH_DATA_PORTS "
                f"({env.get('LARCH_DATA_PORTS')})",
                f"missing {sorted(wanted - got)}, extra {sorted(got - wanted)}",
            )

    def compose(self, config, dockerfile):
        env_defaults = image_env(runtime_stage(open(dockerfile, encoding="utf-8").read()))
        secrets = config.get("secrets") or {}
        for name, service in config.get("services", {}).items():
            env = {**env_defaults, **(service.get("environment") or {})}
            self.check(service.get("read_only") is True, f"service {name}: read_only: true")
            user = service.get("user", "")
            self.check(
                numeric_non_root(user), f"service {name}: user is a numeric non-root uid", user
            )
            mounts = {v.get("target"): v for v in service.get("volumes") or []}
            data = mounts.get(env.get("LARCH_DATA_DIR"), {})
            self.check(
                data.get("type") == "volume",
                f"service {name}: a named volume at LARCH_DATA_DIR ({env.get('LARCH_DATA_DIR')})",
                "the only writable place under read_only",
            )
            targets = {s.get("target"): s.get("source") for s in service.get("secrets") or []}
            key_file = env.get("LARCH_API_KEY_FILE")
            self.check(
                "LARCH_API_KEY" not in env and targets.get(key_file) in secrets,
                f"service {name}: LARCH_API_KEY_FILE ({key_file}) is a mounted compose secret",
                "the key must come from `secrets:`, not the environment",
            )
            published = {int(p["target"]) for p in service.get("ports") or []}
            command = (service.get("command") or ["serve"])[0]
            if command == "control-plane":
                wanted, what = {CONTROL_PORT}, f"port {CONTROL_PORT}"
            elif command == "data-plane":
                port = int(env.get("LARCH_DATA_ADDR", "127.0.0.1:5081").rsplit(":", 1)[1])
                wanted, what = {port}, f"LARCH_DATA_ADDR's port {port}"
            else:
                wanted = {CONTROL_PORT} | port_range(env.get("LARCH_DATA_PORTS", "0"))
                what = f"ports {CONTROL_PORT} and LARCH_DATA_PORTS ({env.get('LARCH_DATA_PORTS')})"
            self.check(
                wanted <= published,
                f"service {name} ({command}): {what} published",
                f"unpublished {sorted(wanted - published)}",
            )


def main(argv):
    checks = Checks()
    if argv[:1] == ["dockerfiles"] and len(argv) >= 2:
        checks.dockerfiles(argv[1:])
    elif argv[:1] == ["compose"] and len(argv) == 2:
        checks.compose(json.load(sys.stdin), argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
