package devtemporal

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// startOrFail starts a dev server for a test (the CLI must be built: `make
// temporal-cli`), stopped when the test ends.
func startOrFail(t *testing.T, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Temporal dev servers")
	}
	srv, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func portOf(t *testing.T, s *Server) int {
	t.Helper()
	_, p, _ := strings.Cut(s.Address, ":")
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// The server already answering on a port is another's: a start on that
// port fails (its process cannot bind it) instead of handing back the
// other server as its own.
func TestStart_on_a_port_another_server_holds_fails(t *testing.T) {
	other := startOrFail(t, Options{})

	srv, err := Start(t.Context(), Options{Port: portOf(t, other)})
	if err == nil {
		srv.Stop()
		t.Fatalf("Start on %s, where another dev server answers, returned a server", other.Address)
	}
	if !errors.Is(err, errExited) {
		t.Fatalf("Start on a taken port: %v, want %v", err, errExited)
	}
	if err := other.answers(t.Context()); err != nil {
		t.Fatalf("the first server after the failed start: %v", err)
	}
}

// A free port another process takes before the server binds it costs an
// attempt, not the start: the next attempt runs on other ports.
func TestStart_tries_again_on_other_ports_when_one_was_taken(t *testing.T) {
	other := startOrFail(t, Options{})
	taken := portOf(t, other)

	handed := 0
	srv, err := startWith(t.Context(), Options{}, func() (int, error) {
		if handed++; handed == 1 {
			return taken, nil // the frontend port of the first attempt
		}
		return freePort()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if srv.Address == other.Address {
		t.Fatalf("the second server is at %s, the first server's address", srv.Address)
	}
	if err := srv.answers(t.Context()); err != nil {
		t.Fatalf("the started server does not answer as itself: %v", err)
	}
}
