package activities_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// allocated runs fn and returns how many bytes the process allocated
// meanwhile. The tests using it are not parallel: parallel tests wait
// until the sequential ones are done.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

const flood = 100_000_000 // bytes a flooding command writes

func TestExec_stdout_flood_is_killed_with_bounded_memory(t *testing.T) {
	h := activities.Exec(activities.ExecConfig{Command: []string{"sh", "-c", "head -c " + strconv.Itoa(flood) + " /dev/zero; exec sleep 600"}})
	// Killed at once, not after its sleep: else the context ends it, and
	// the error is not the flood's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var err error
	alloc := allocated(func() { _, err = h.Handle(ctx, nil) })
	require.ErrorContains(t, err, "stdout passed 1048576 bytes")
	require.True(t, activities.IsPermanent(err), "a command that floods stdout will again")
	require.Less(t, alloc, uint64(24<<20), "allocation stays far below the %d bytes written", flood)
}

func TestExec_stderr_keeps_its_tail_with_bounded_memory(t *testing.T) {
	h := activities.Exec(activities.ExecConfig{Command: []string{"sh", "-c",
		"head -c " + strconv.Itoa(flood) + " /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the last words' >&2; exit 3"}})
	var err error
	alloc := allocated(func() { _, err = h.Handle(context.Background(), nil) })
	require.ErrorContains(t, err, "exited with code 3: ")
	require.ErrorContains(t, err, "xxx\nthe last words")
	require.False(t, activities.IsPermanent(err))
	require.Less(t, len(err.Error()), 4096, "the error keeps the tail only")
	require.Less(t, alloc, uint64(24<<20), "allocation stays far below the %d bytes written", flood)
}

// setsidScript starts a process in a session of its own (out of reach of
// the process group kill) that keeps stdout open for a minute, writes its
// pid to a file and then runs rest. The process is killed when the test
// ends.
func setsidScript(t *testing.T, rest string) (cmd []string, pidFile string) {
	t.Helper()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid here")
	}
	pidFile = filepath.Join(t.TempDir(), "setsid.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return []string{"sh", "-c", "setsid sleep 600 & echo $! > " + pidFile + "; " + rest}, pidFile
}

// handleWithin runs h and fails the test when it takes longer than d.
func handleWithin(t *testing.T, d time.Duration, h activities.Handler, ctx context.Context) (json.RawMessage, error) {
	t.Helper()
	type answer struct {
		out json.RawMessage
		err error
	}
	done := make(chan answer, 1)
	go func() { out, err := h.Handle(ctx, nil); done <- answer{out, err} }()
	select {
	case a := <-done:
		return a.out, a.err
	case <-time.After(d):
		t.Fatalf("the handler still runs after %s", d)
		return nil, nil
	}
}

func TestExec_background_process_holding_stdout_does_not_block_completion(t *testing.T) {
	t.Parallel()
	cmd, _ := setsidScript(t, `echo '{"done":true}'`)
	out, err := handleWithin(t, 5*time.Minute, activities.Exec(activities.ExecConfig{Command: cmd}), context.Background())
	require.NoError(t, err)
	require.JSONEq(t, `{"done":true}`, string(out), "what the command wrote is its result")
}

func TestExec_background_process_holding_stdout_does_not_block_cancel(t *testing.T) {
	t.Parallel()
	cmd, pidFile := setsidScript(t, "exec sleep 600")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if _, err := os.Stat(pidFile); err == nil {
				time.Sleep(100 * time.Millisecond) // let the shell exec its sleep
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	_, err := handleWithin(t, 5*time.Minute, activities.Exec(activities.ExecConfig{Command: cmd}), ctx)
	require.ErrorIs(t, err, context.Canceled)
}
