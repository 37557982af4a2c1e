package bridge

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// A dial error that is a TLS problem names the setting to check; any
// other error, or a plain connection, gets no hint.
func TestTLSHint_names_the_setting(t *testing.T) {
	const prefix = `failed reaching server: connection error: desc = "transport: authentication handshake failed: `
	withCert := &tls.Config{Certificates: []tls.Certificate{{}}}
	for _, tc := range []struct {
		err  string
		conf *tls.Config
		want string
	}{
		{prefix + `tls: failed to verify certificate: x509: certificate signed by unknown authority"`, &tls.Config{}, "TEMPORAL_TLS_SERVER_CA_CERT_PATH"},
		{prefix + `tls: failed to verify certificate: x509: certificate is valid for a.example, not b.example"`, &tls.Config{}, "TEMPORAL_TLS_SERVER_NAME"},
		{prefix + `tls: first record does not look like a TLS handshake"`, &tls.Config{}, "TEMPORAL_TLS=false"},
		{`failed reaching server: remote error: tls: certificate required`, &tls.Config{}, "the server requires a client certificate"},
		{`failed reaching server: write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe`, &tls.Config{}, "if it requires a client certificate"},
		{`failed reaching server: write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe`, withCert, ""},
		{`failed reaching server: dial tcp 127.0.0.1:2: connect: connection refused`, &tls.Config{}, ""},
		{`failed reaching server: rpc error: code = Unauthenticated desc = invalid API key`, &tls.Config{}, ""},
		{prefix + `x509: certificate signed by unknown authority"`, nil, ""},
	} {
		got := tlsHint(errors.New(tc.err), tc.conf)
		if tc.want == "" {
			require.Empty(t, got, tc.err)
		} else {
			require.Contains(t, got, tc.want, tc.err)
		}
	}
}
