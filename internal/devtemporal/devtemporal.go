// Package devtemporal starts the pinned Temporal CLI dev server (in
// memory, on 127.0.0.1) for end-to-end tests and benchmarks. The CLI is
// built by `make temporal-cli`; this package never downloads anything.
package devtemporal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// Version is the pinned Temporal CLI version.
const Version = "v1.5.1"

// CLIPath returns the Temporal CLI to run: $TMBRIDGE_TEMPORAL_CLI, else
// where `make temporal-cli` installs it.
func CLIPath() (string, error) {
	path := os.Getenv("TMBRIDGE_TEMPORAL_CLI")
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		path = filepath.Join(home, ".cache", "tmbridge", "temporal-"+Version, "temporal")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("temporal CLI %s not found at %s: run `make temporal-cli` (or set TMBRIDGE_TEMPORAL_CLI)", Version, path)
	}
	return path, nil
}

// Server is a running dev server.
type Server struct {
	Address string // host:port of the frontend
	UIURL   string // Temporal Web, when not headless
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error         // its exit status, once done is closed
	// marker is a namespace only this server was started with: the one
	// answering on Address is this server only if it has it.
	marker string
}

// Options configure Start.
type Options struct {
	// UI serves Temporal Web on a free port (default: headless).
	UI bool
	// Log receives the server's output (default: discarded).
	Log *os.File
	// Port is the frontend port (default: a free one).
	Port int
	// DBFile persists the server's state in this SQLite file, so that a
	// server started again on it (same Port) carries on every run
	// (default: in memory).
	DBFile string
	// ServerDefaults runs the server with Temporal's own dynamic config,
	// without RecommendedConfig.
	ServerDefaults bool
	// NoSearchAttributes leaves out the TaskType and TaskID search
	// attributes (the bridge then sets none).
	NoSearchAttributes bool
}

// RecommendedConfig is the dynamic config the dev stack and the tests run
// Temporal with, as KEY=VALUE: eager activities, so that an activity a
// workflow task schedules comes back in that task's answer to the same
// worker, without a trip through matching (the TypeScript SDK's test
// environment and the Go SDK's CI set it too; the server's default is
// off).
var RecommendedConfig = []string{"system.enableActivityEagerExecution=true"}

// Start starts a dev server with the search attributes TaskType and TaskID
// and RecommendedConfig (unless opts say otherwise), and waits until it
// answers.
//
// Free ports are picked before the server binds them, so another process
// may take one first (tests start dev servers side by side). A server that
// exits before it answers is started again on other ports (but opts.Port),
// three attempts in all. And a server is ready only once the one
// answering on its port knows a namespace made for this start: never
// another process's server that took the port.
func Start(ctx context.Context, opts Options) (*Server, error) {
	return startWith(ctx, opts, freePort)
}

// startWith is Start with the given port picker.
func startWith(ctx context.Context, opts Options, pickPort func() (int, error)) (*Server, error) {
	cli, err := CLIPath()
	if err != nil {
		return nil, err
	}
	var errs []error
	for range 3 {
		s, err := start(ctx, cli, opts, pickPort)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errExited) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// errExited: the server's process exited before it answered (a port it
// was given was taken, say).
var errExited = errors.New("temporal dev server exited before it answered")

// start makes one attempt.
func start(ctx context.Context, cli string, opts Options, pickPort func() (int, error)) (*Server, error) {
	var err error
	port := opts.Port
	if port == 0 {
		if port, err = pickPort(); err != nil {
			return nil, err
		}
	}
	httpPort, _ := pickPort()
	metricsPort, _ := pickPort()
	marker, err := markerNamespace()
	if err != nil {
		return nil, err
	}
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(port),
		"--http-port", strconv.Itoa(httpPort), "--metrics-port", strconv.Itoa(metricsPort), "--log-level", "error",
		"--namespace", marker}
	if !opts.NoSearchAttributes {
		args = append(args, "--search-attribute", "TaskType=Keyword", "--search-attribute", "TaskID=Keyword")
	}
	if !opts.ServerDefaults {
		for _, kv := range RecommendedConfig {
			args = append(args, "--dynamic-config-value", kv)
		}
	}
	if opts.DBFile != "" {
		args = append(args, "--db-filename", opts.DBFile)
	}
	s := &Server{Address: "127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{}), marker: marker}
	if opts.UI {
		uiPort, _ := pickPort()
		args = append(args, "--ui-port", strconv.Itoa(uiPort))
		s.UIURL = "http://127.0.0.1:" + strconv.Itoa(uiPort)
	} else {
		args = append(args, "--headless")
	}
	s.cmd = exec.Command(cli, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if opts.Log != nil {
		s.cmd.Stdout, s.cmd.Stderr = opts.Log, opts.Log
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cli, err)
	}
	go func() { s.exitErr = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// markerNamespace names a namespace for one start.
func markerNamespace() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "devtemporal-" + hex.EncodeToString(b), nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%w: %v", errExited, s.exitErr)
		default:
		}
		err := s.answers(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(errors.New("temporal dev server did not answer in time"), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// answers checks that this server answers on Address: that the server
// there is healthy and knows this start's marker namespace (else it is
// another's, or not ready yet).
func (s *Server) answers(ctx context.Context) error {
	c, err := client.Dial(client.Options{HostPort: s.Address, Logger: quiet{}})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.marker})
	return err
}

// PID is the server process's id (for measurements of its CPU time).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop stops the server and waits for it to exit: SIGTERM, SIGKILL after
// 10 s, and after 30 s more it returns anyway (a process stuck in the
// kernel must not hang the test that stops it).
func (s *Server) Stop() {
	if s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done: // exited: its process group id may be another's by now
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
	}
}

// freePort finds a port free at the time of the call.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// quiet drops the SDK's logs while waiting.
type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}
