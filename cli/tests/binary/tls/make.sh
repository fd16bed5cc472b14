#!/usr/bin/env bash
# Makes the test-only CA and server certificate used by cli/tests/binary/tls.rs (valid for
# 100 years; the keys are test fixtures and protect nothing). Run from this folder.
set -euo pipefail
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
    -subj "/CN=Larch test CA" -keyout ca-key.pem -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout server-key.pem -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:*.default.larch.test\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 36500 \
    -extfile ext.cnf -out server.pem
rm -f server.csr ext.cnf ca.srl ca-key.pem
