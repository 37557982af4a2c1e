package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// tlsServerName is the DNS name in the test server certificate, besides
// 127.0.0.1.
const tlsServerName = "temporal.e2e.test"

// The bridge binary reaches Temporal through a TLS-terminating proxy with
// Temporal's standard TLS variables only: server TLS with a private CA,
// mutual TLS, and an API key over TLS. Each runs tasks to completion,
// once each; each mistake (no client certificate, a wrong key, a CA that
// did not sign the server's certificate) stops the bridge at start with
// an error that says what is wrong.
func TestE2E_temporal_over_TLS(t *testing.T) {
	skipExternal(t, "the proxy fronts the suite's own dev server")
	pki := newTestPKI(t)
	const key = "tls-e2e-temporal-api-key-7f3a9c" // the proxy's valid key

	t.Run("server TLS with the test CA", func(t *testing.T) {
		p := startTemporalProxy(t, pki.server, nil, "")
		runTasksOverTLS(t, p, []string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH=" + pki.ca.certFile})
	})

	t.Run("mutual TLS", func(t *testing.T) {
		p := startTemporalProxy(t, pki.server, pki.ca.pool(), "")
		server := []string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH=" + pki.ca.certFile, "TEMPORAL_TLS_SERVER_NAME=" + tlsServerName}
		runTasksOverTLS(t, p, append(slices.Clone(server),
			"TEMPORAL_TLS_CLIENT_CERT_PATH="+pki.client.certFile, "TEMPORAL_TLS_CLIENT_KEY_PATH="+pki.client.keyFile))
		require.Positive(t, p.stats().clientCerts, "the proxy saw the bridge's client certificate")

		out := failAtStart(t, p, server)
		// TLS 1.3: the server's "certificate required" alert, or the
		// connection it closed, whichever the bridge reads first.
		require.Regexp(t, `"hint":"TLS: the server [^"]*client certificate[:,] set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"`, out)
	})

	t.Run("API key over TLS", func(t *testing.T) {
		p := startTemporalProxy(t, pki.server, nil, key)
		out := runTasksOverTLS(t, p, []string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH=" + pki.ca.certFile, "TEMPORAL_API_KEY=" + key})
		st := p.stats()
		require.Positive(t, st.withKey, "the proxy saw the key on the bridge's calls")
		require.Zero(t, st.refused, "every call carried the key")
		require.Contains(t, out, `"temporal_api_key":"set (redacted)"`)
		require.NotContains(t, out, key, "the key never shows in the bridge's output")

		const wrong = "tls-e2e-wrong-api-key-51b2e0"
		out = failAtStart(t, p, []string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH=" + pki.ca.certFile, "TEMPORAL_API_KEY=" + wrong})
		require.Positive(t, p.stats().refused, "the proxy refused the wrong key")
		require.Contains(t, out, "Unauthenticated desc = invalid API key", "the error is the server's refusal")
		require.NotContains(t, out, wrong)
	})

	t.Run("a CA that did not sign the server certificate", func(t *testing.T) {
		p := startTemporalProxy(t, pki.server, nil, "")
		other := newTestCA(t, t.TempDir(), "unrelated CA")
		out := failAtStart(t, p, []string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH=" + other.certFile})
		require.Contains(t, out, "x509: certificate signed by unknown authority")
		require.Contains(t, out, `"hint":"TLS: the server's certificate is not signed by the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH`, "the error names the setting to check")
		require.Zero(t, p.stats().forwarded, "nothing reached Temporal")

		// tmbridge check says the same in its Temporal row, and exits 1.
		s := newStack(t, devserver.StylePHP)
		s.register("example.echo")
		check := exec.Command(bin("tmbridge"), append([]string{"check"}, proxyArgs(s)...)...)
		check.Env = append(s.environ(), "TEMPORAL_ADDRESS="+p.addr, "TEMPORAL_TLS_SERVER_CA_CERT_PATH="+other.certFile)
		table, err := check.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, string(table))
		require.Equal(t, 1, exit.ExitCode(), string(table))
		require.Regexp(t, `Temporal reachable +FAIL +`+regexp.QuoteMeta(p.addr)+`.*unknown authority.*TEMPORAL_TLS_SERVER_CA_CERT_PATH`, string(table))
	})
}

// The e2e suite runs against any Temporal it is pointed at: here a subset
// of it runs, as a subprocess in external mode, against the proxy with
// mutual TLS and an API key, set by Temporal's standard variables alone.
func TestE2E_suite_runs_against_an_external_temporal(t *testing.T) {
	skipExternal(t, "it runs the suite in external mode itself") // and so does not recurse
	pki := newTestPKI(t)
	const key = "external-e2e-temporal-api-key-93d1"
	p := startTemporalProxy(t, pki.server, pki.ca.pool(), key)

	// The binary, an in-process bridge with a worker of the test's own, and
	// a composition with a signal.
	tests := []string{"TestE2E_max_runs_exits_zero", "TestE2E_go_workflow_and_routed_queue", "TestE2E_composition_example"}
	cmd := exec.Command(os.Args[0], "-test.run=^("+strings.Join(tests, "|")+")$", "-test.v", "-test.count=1", "-test.timeout=10m")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEMPORAL_") && !strings.HasPrefix(kv, externalEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, externalEnv+"=external",
		"TEMPORAL_ADDRESS="+p.addr, "TEMPORAL_NAMESPACE="+temporalNamespace, "TEMPORAL_API_KEY="+key,
		"TEMPORAL_TLS_SERVER_CA_CERT_PATH="+pki.ca.certFile, "TEMPORAL_TLS_SERVER_NAME="+tlsServerName,
		"TEMPORAL_TLS_CLIENT_CERT_PATH="+pki.client.certFile, "TEMPORAL_TLS_CLIENT_KEY_PATH="+pki.client.keyFile)
	raw, err := cmd.CombinedOutput()
	out := string(raw)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
			t.Logf("the suite in external mode:\n%s", out)
		}
	})
	require.NoError(t, err, out)
	require.Contains(t, out, "e2e: against Temporal at "+p.addr+", namespace "+temporalNamespace+" (TLS true, API key set true)")
	for _, name := range tests {
		require.Regexp(t, `(?m)^--- PASS: `+name+` `, out, "it ran and passed")
	}
	require.NotContains(t, out, "--- SKIP")
	require.NotContains(t, out, key)

	st := p.stats()
	require.Zero(t, st.refused, "every call carried the key")
	require.Equal(t, st.forwarded, st.clientCerts, "every call came with a client certificate")
	for _, method := range []string{"StartWorkflowExecution", "PollWorkflowTaskQueue", "PollActivityTaskQueue", "RespondActivityTaskCompleted"} {
		require.Positive(t, st.methods[method], "%s went through the proxy", method)
	}
}

// runTasksOverTLS runs the bridge binary against p with TEMPORAL_ADDRESS
// and env, until it has run each of a few tasks; every one completes
// once. It returns the bridge's stdout and stderr.
func runTasksOverTLS(t *testing.T, p *temporalProxy, env []string) string {
	t.Helper()
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	var ids []string
	for i := range 4 {
		ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("over TLS %d", i)}))
	}
	b := startBinaryArgs(t, proxyArgs(s, "--max-runs=4"), append(s.environ(), append(env, "TEMPORAL_ADDRESS="+p.addr)...))
	require.NoError(t, b.cmd.Wait(), "--max-runs=4: exit 0 once the runs are done")
	out := b.stdout.String() + b.stderr.String()
	require.Contains(t, out, `"tls":true`, "the banner says TLS")
	states := s.waitFinal(ids)
	for i, id := range ids {
		msg := fmt.Sprintf("over TLS %d", i)
		require.Equal(t, "completed", states[id].Status, states[id].Error)
		require.JSONEq(t, fmt.Sprintf(`{"echo":%q,"length":%d}`, msg, len(msg)), string(states[id].Result))
	}
	s.requireOneOutcomeEach(ids)
	st := p.stats()
	require.Positive(t, st.methods["StartWorkflowExecution"], "the runs started through the proxy")
	require.Positive(t, st.methods["RespondActivityTaskCompleted"], "the worker polled through the proxy")
	return out
}

// failAtStart runs the bridge binary against p with env, requires that it
// exits 1 before claiming anything, and returns its stdout and stderr.
func failAtStart(t *testing.T, p *temporalProxy, env []string) string {
	t.Helper()
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	b := startBinaryArgs(t, proxyArgs(s), append(s.environ(), append(env, "TEMPORAL_ADDRESS="+p.addr)...))
	done := make(chan error, 1)
	go func() { done <- b.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute): // a guard against a hang, not a timing assertion
		t.Fatal("the bridge did not stop at start")
	}
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 1, exit.ExitCode())
	require.Zero(t, s.tm.Stats().ClaimCalls, "nothing was claimed")
	out := b.stdout.String() + b.stderr.String()
	require.Contains(t, out, "cannot connect to Temporal")
	require.Contains(t, out, p.addr, "the error names the address")
	return out
}

// proxyArgs are s's bridge flags without --temporal-address, so that the
// bridge takes TEMPORAL_ADDRESS, as a user's deployment would.
func proxyArgs(s *stack, extra ...string) []string {
	return slices.DeleteFunc(s.args("tls-bridge", extra...), func(a string) bool {
		return strings.HasPrefix(a, "--temporal-address=")
	})
}

// temporalProxy terminates TLS (and mutual TLS) in front of the suite's
// dev server and forwards gRPC over HTTP/2, so that it can check an API
// key as a cloud endpoint does.
type temporalProxy struct {
	addr string
	mu   sync.Mutex
	st   proxyStats
}

// proxyStats counts the calls a proxy saw.
type proxyStats struct {
	forwarded   int            // calls passed to Temporal
	methods     map[string]int // forwarded calls by gRPC method
	withKey     int            // forwarded calls that carried the valid key
	refused     int            // calls refused for a missing or wrong key
	clientCerts int            // forwarded calls made with a client certificate
}

// startTemporalProxy listens on 127.0.0.1 with cert; clientCAs, if set,
// requires a client certificate they signed; key, if set, requires
// "authorization: Bearer <key>" on every call.
func startTemporalProxy(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool, key string) *temporalProxy {
	t.Helper()
	p := &temporalProxy{st: proxyStats{methods: map[string]int{}}}
	backend := &http.Transport{Protocols: new(http.Protocols)}
	backend.Protocols.SetUnencryptedHTTP2(true) // the dev server speaks h2c
	t.Cleanup(backend.CloseIdleConnections)
	target := &url.URL{Scheme: "http", Host: temporalAddr}
	forward := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     backend,
		FlushInterval: -1, // streamed as it comes, gRPC's trailers included
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keyOK := r.Header.Get("Authorization") == "Bearer "+key
		p.mu.Lock()
		if key != "" && !keyOK {
			p.st.refused++
			p.mu.Unlock()
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "16") // UNAUTHENTICATED, as a trailers-only answer
			w.Header().Set("Grpc-Message", "invalid API key")
			w.WriteHeader(http.StatusOK)
			return
		}
		p.st.forwarded++
		p.st.methods[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		if key != "" {
			p.st.withKey++
		}
		if len(r.TLS.PeerCertificates) > 0 {
			p.st.clientCerts++
		}
		p.mu.Unlock()
		forward.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		srv.TLS.ClientAuth, srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

func (p *temporalProxy) stats() proxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.methods = map[string]int{}
	for k, v := range p.st.methods {
		st.methods[k] = v
	}
	return st
}

// testPKI is a CA with a server certificate (127.0.0.1 and tlsServerName)
// and a client certificate it signed, written as PEM files.
type testPKI struct {
	ca     *testCA
	server tls.Certificate
	client certFiles
}

type certFiles struct{ certFile, keyFile string }

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "tmbridge e2e CA")
	server := ca.issue(t, dir, "server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: tlsServerName},
		DNSNames:    []string{tlsServerName},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	serverCert, err := tls.LoadX509KeyPair(server.certFile, server.keyFile)
	require.NoError(t, err)
	client := ca.issue(t, dir, "client", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "tmbridge e2e worker"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return &testPKI{ca: ca, server: serverCert, client: client}
}

// testCA is a self-signed ECDSA CA.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	ca := &testCA{cert: cert, key: key, certFile: filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".pem")}
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs tmpl (subject, names, usage) with a fresh key and writes
// <name>.pem and <name>-key.pem.
func (ca *testCA) issue(t *testing.T, dir, name string, tmpl *x509.Certificate) certFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	f := certFiles{certFile: filepath.Join(dir, name+".pem"), keyFile: filepath.Join(dir, name+"-key.pem")}
	writePEM(t, f.certFile, "CERTIFICATE", der)
	writePEM(t, f.keyFile, "PRIVATE KEY", keyDER)
	return f
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	require.NoError(t, err)
	return n
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
}
