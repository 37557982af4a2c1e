package activities_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handler.sh")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755))
	return path
}

func TestExec_params_in_result_out(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_ALLOWED", "yes")
	h := activities.Exec(activities.ExecConfig{
		Command: []string{script(t, `read p; printf '{"got":%s,"allowed":"%s","hidden":"%s"}' "$p" "$TMBRIDGE_TEST_ALLOWED" "$HOME"`)},
		Env:     []string{"TMBRIDGE_TEST_ALLOWED"},
	})
	out, err := h.Handle(context.Background(), json.RawMessage(`{"a":1}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"got":{"a":1},"allowed":"yes","hidden":""}`, string(out), "only allowlisted env vars reach the command")
}

func TestExec_failures(t *testing.T) {
	t.Parallel()
	fail := activities.Exec(activities.ExecConfig{Command: []string{script(t, `echo "line 1" >&2; echo "it broke" >&2; exit 3`)}})
	_, err := fail.Handle(context.Background(), nil)
	require.ErrorContains(t, err, "exited with code 3: line 1\nit broke")
	require.False(t, activities.IsPermanent(err), "retried by default")

	perm := activities.Exec(activities.ExecConfig{Command: []string{script(t, `exit 2`)}, PermanentExitCodes: []int{2}})
	_, err = perm.Handle(context.Background(), nil)
	require.True(t, activities.IsPermanent(err))

	garbage := activities.Exec(activities.ExecConfig{Command: []string{script(t, `echo not json`)}})
	_, err = garbage.Handle(context.Background(), nil)
	require.ErrorContains(t, err, "not JSON")
	require.True(t, activities.IsPermanent(err))

	missing := activities.Exec(activities.ExecConfig{Command: []string{"/no/such/program"}})
	_, err = missing.Handle(context.Background(), nil)
	require.True(t, activities.IsPermanent(err))
}

// A command that exits leaving a process behind in its group: the
// process is killed, not leaked one per task.
func TestExec_exit_kills_what_the_command_left_running(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	h := activities.Exec(activities.ExecConfig{Command: []string{script(t, `sleep 123 >/dev/null 2>&1 & echo $! > `+pidFile+`; echo '{}'`)}})
	out, err := h.Handle(context.Background(), nil)
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(out))
	pid, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return gone(strings.TrimSpace(string(pid))) }, 10*time.Second, 10*time.Millisecond, "the background process is killed")
}

// The command gets the environment its config gives and the TASK_
// variables, never the bridge's own, even with nothing configured.
func TestExec_command_never_inherits_the_bridge_environment(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_SECRET", "s3cret")
	t.Setenv("HOME", "/home/bridge")
	h := activities.Exec(activities.ExecConfig{Command: []string{"/bin/sh", "-c", `printf '{"secret":"%s","home":"%s"}' "$TMBRIDGE_TEST_SECRET" "${HOME-}"`}})
	out, err := h.Handle(context.Background(), nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"secret":"","home":""}`, string(out))
}

// A start that fails for want of resources is retried; one whose program
// cannot run fails the task for good.
func TestExec_start_errors_say_whether_to_retry(t *testing.T) {
	t.Parallel()
	notExec := filepath.Join(t.TempDir(), "data.txt")
	require.NoError(t, os.WriteFile(notExec, []byte("x"), 0o644))
	for name, cmd := range map[string]activities.ExecConfig{
		"missing":        {Command: []string{"/no/such/program"}},
		"not on PATH":    {Command: []string{"no-such-program-tmbridge"}},
		"not executable": {Command: []string{notExec}},
		"no such dir":    {Command: []string{"/bin/true"}, Dir: "/no/such/dir"},
	} {
		_, err := activities.Exec(cmd).Handle(context.Background(), nil)
		require.Error(t, err, name)
		require.True(t, activities.IsPermanent(err), "%s: %v", name, err)
	}
	for _, errno := range []syscall.Errno{syscall.EAGAIN, syscall.ENOMEM, syscall.EMFILE, syscall.ETXTBSY} {
		require.False(t, activities.CannotRunForTest(&os.PathError{Op: "fork/exec", Path: "/bin/x", Err: errno}), errno.Error())
	}
}

func TestExec_cancel_kills_the_process_group(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The command starts a grandchild that would outlive a plain kill.
	h := activities.Exec(activities.ExecConfig{Command: []string{script(t, `sleep 60 & echo $! > `+pidFile+`; wait`)}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.Handle(ctx, nil); done <- err }()
	// The file exists before the pid is written to it: wait for the pid.
	var pid string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		pid = strings.TrimSpace(string(b))
		return err == nil && strings.HasSuffix(string(b), "\n") && pid != ""
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.Eventually(t, func() bool { return gone(pid) }, 10*time.Second, 10*time.Millisecond, "the grandchild is killed too")
}

// gone reports whether process pid has ended: no longer listed, or a
// zombie its new parent has not reaped yet.
func gone(pid string) bool {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	return os.IsNotExist(err) || strings.Contains(string(stat), ") Z ")
}

func TestHTTP_handler(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_TOKEN", "tok-123")
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/ok":
			var p map[string]any
			_ = json.NewDecoder(r.Body).Decode(&p)
			_ = json.NewEncoder(w).Encode(map[string]any{"seen": p})
		case "/bad":
			http.Error(w, "no such thing", http.StatusUnprocessableEntity)
		case "/busy":
			w.Header().Set("Retry-After", "3")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			http.Error(w, "oops", http.StatusBadGateway)
		}
	}))
	t.Cleanup(srv.Close)
	cfg := func(path string) activities.HTTPConfig {
		return activities.HTTPConfig{URL: srv.URL + path, HeadersFromEnv: map[string]string{"Authorization": "TMBRIDGE_TEST_TOKEN"}}
	}
	out, err := activities.HTTP(cfg("/ok"), nil).Handle(context.Background(), json.RawMessage(`{"x":1}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"seen":{"x":1}}`, string(out))
	require.Equal(t, "tok-123", auth)

	_, err = activities.HTTP(cfg("/bad"), nil).Handle(context.Background(), nil)
	require.True(t, activities.IsPermanent(err), "4xx is permanent")
	require.ErrorContains(t, err, "422")
	_, err = activities.HTTP(cfg("/busy"), nil).Handle(context.Background(), nil)
	require.False(t, activities.IsPermanent(err), "429 retries")
	_, err = activities.HTTP(cfg("/down"), nil).Handle(context.Background(), nil)
	require.False(t, activities.IsPermanent(err), "5xx retries")
	require.NotContains(t, err.Error(), "tok-123")
}
