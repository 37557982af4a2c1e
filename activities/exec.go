package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.temporal.io/sdk/activity"

	"github.com/prismq/tmbridge/taskmanager"
)

// ExecConfig runs a command as a task type's handler: params as JSON on
// stdin, the result as JSON on stdout.
type ExecConfig struct {
	// Command is the argv; no shell is involved. Required.
	Command []string `json:"command,omitempty" koanf:"command"`
	// Dir is the working directory (default: the bridge's).
	Dir string `json:"dir,omitempty" koanf:"dir"`
	// Env lists the environment the command gets: NAME passes the bridge's
	// variable through, NAME=value sets one. Nothing else is passed but
	// TASK_ID, TASK_TYPE and TASK_ATTEMPT (the handler's attempt within
	// this claim, Temporal's retry count from 1; not TaskManager's
	// attempts).
	Env []string `json:"env,omitempty" koanf:"env"`
	// PermanentExitCodes are exit codes that fail the task without retry.
	PermanentExitCodes []int `json:"permanent_exit_codes,omitempty" koanf:"permanent_exit_codes"`
}

// Validate reports what is wrong with the config.
func (c *ExecConfig) Validate() error {
	if len(c.Command) == 0 || strings.TrimSpace(c.Command[0]) == "" {
		return errors.New("exec.command: needs at least the program")
	}
	return nil
}

// Program returns the program the command starts, as it would be found
// when a task runs (in PATH, or relative to Dir), or why it cannot be.
func (c *ExecConfig) Program() (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	prog := c.Command[0]
	if strings.ContainsRune(prog, filepath.Separator) && !filepath.IsAbs(prog) && c.Dir != "" {
		prog = filepath.Join(c.Dir, prog)
	}
	return exec.LookPath(prog)
}

// Bounds of an exec handler's command.
const (
	// stderrTail is how much of a failed command's stderr its error keeps.
	stderrTail = 2048
	// stderrKept is how much of stderr is kept while the command runs: its
	// last bytes.
	stderrKept = 64 << 10
	// maxExecStdout is the most stdout a command may write, the most a
	// handler may return (MaxResultBytes): a command writing more is killed
	// and the task fails for good. (TaskManager stores at most 65,535 bytes
	// of a result, taskmanager.MaxStoredBytes: a longer one that fits here
	// fails the task when its outcome is built.)
	maxExecStdout = MaxResultBytes
	// execWaitDelay is how long stdout and stderr are still read once the
	// command has exited or was killed. A process that outlives it (one
	// started with setsid, out of reach of the group kill) and keeps them
	// open cannot hold the handler longer.
	execWaitDelay = 3 * time.Second
)

// Exec returns a Handler that runs the configured command. A non-zero exit
// fails the attempt with the tail of stderr, the values of its configured
// env hidden (for good if the code is in
// PermanentExitCodes); cancellation or a timeout kills the whole process
// group; stdout that is not JSON fails the task for good, and so does
// stdout over MaxResultBytes (the process group is killed at once). Only the last
// 64 KiB of stderr are kept. Once the command has exited, stdout is read
// for at most 3 s more: a background process that keeps it open is cut
// off, and what was read is the result. Whatever the command left running
// in its process group is killed when it exits. A start that fails for
// want of processes, memory or files is retried; one whose program cannot
// run (missing, not allowed, not executable) fails the task for good.
// A config Validate refuses (no command) fails every task, for good,
// saying so.
func Exec(c ExecConfig) Handler {
	if err := c.Validate(); err != nil {
		return misconfigured(err)
	}
	return HandlerFunc(func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
		cmd := exec.Command(c.Command[0], c.Command[1:]...)
		cmd.Dir = c.Dir
		cmd.Env = execEnv(ctx, c.Env)
		hide := newRedactor(envValues(cmd.Env, c.Env)...)
		cmd.Stdin = bytes.NewReader(taskmanager.OrEmptyObject(params))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = execWaitDelay
		killGroup := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		stdout := &cappedBuffer{max: maxExecStdout, full: killGroup}
		stderr := &tailBuffer{keep: stderrKept}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			err = fmt.Errorf("start %s: %w", c.Command[0], err)
			if cannotRun(err) {
				return nil, Permanent(err)
			}
			return nil, err // out of processes, memory or files for now: retried
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
			killGroup() // what it left running in its group dies with it
		case <-ctx.Done():
			killGroup()
			<-done
			return nil, fmt.Errorf("%s killed: %w", c.Command[0], ctx.Err())
		}
		// Wait has returned: the copying goroutines are done with the buffers.
		if stdout.passed {
			return nil, Permanent(fmt.Errorf("%s killed: stdout passed %d bytes (TaskManager stores at most %d of a result)", c.Command[0], maxExecStdout, taskmanager.MaxStoredBytes))
		}
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil // exited 0; a process it left behind held stdout or stderr open
		}
		if err != nil {
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				e := fmt.Errorf("%s exited with code %d: %s", c.Command[0], exitErr.ExitCode(), hide.tail(stderr.Bytes(), stderrTail))
				if slices.Contains(c.PermanentExitCodes, exitErr.ExitCode()) {
					return nil, Permanent(e)
				}
				return nil, e
			}
			return nil, err
		}
		out := taskmanager.OrEmptyObject(stdout.Bytes())
		if !json.Valid(out) {
			return nil, Permanent(fmt.Errorf("%s wrote a result that is not JSON: %q", c.Command[0], hide.tail(out, 200)))
		}
		return out, nil
	})
}

// cannotRun reports a start error no retry mends: no such program or
// directory, not allowed, not an executable.
func cannotRun(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR)
}

// execEnv is a command's whole environment: never nil, for a nil Env
// would hand the command the bridge's own (its secrets included).
func execEnv(ctx context.Context, allow []string) []string {
	env := []string{}
	for _, e := range allow {
		if strings.Contains(e, "=") {
			env = append(env, e)
		} else if v, ok := os.LookupEnv(e); ok {
			env = append(env, e+"="+v)
		}
	}
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		env = append(env, "TASK_ATTEMPT="+strconv.Itoa(int(info.Attempt)))
	}
	if in, ok := ctx.Value(inputKey{}).(HandlerInput); ok {
		env = append(env, "TASK_ID="+in.TaskID, "TASK_TYPE="+in.TaskType)
	}
	return env
}

// envValues are the values of the variables the config gives a command
// (set or passed through), which its error hides when stderr quotes them.
func envValues(env, configured []string) []string {
	var out []string
	for _, kv := range env {
		name, v, _ := strings.Cut(kv, "=")
		for _, c := range configured {
			if c == name || strings.HasPrefix(c, name+"=") {
				out = append(out, v)
			}
		}
	}
	return out
}

// errStdoutFull stops the copy of a command's stdout past its bound.
var errStdoutFull = errors.New("stdout bound passed")

// cappedBuffer keeps up to max bytes, never holding more than max in
// memory. The write that would pass them calls full (which kills the
// command) and fails, which closes the pipe.
type cappedBuffer struct {
	b      []byte
	max    int
	full   func()
	passed bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.passed || len(c.b)+len(p) > c.max {
		if !c.passed {
			c.passed = true
			c.full()
		}
		return 0, errStdoutFull
	}
	if need := len(c.b) + len(p); need > cap(c.b) {
		grown := make([]byte, len(c.b), min(max(2*cap(c.b), need, 4096), c.max))
		copy(grown, c.b)
		c.b = grown
	}
	c.b = append(c.b, p...)
	return len(p), nil
}

// Bytes returns what was kept.
func (c *cappedBuffer) Bytes() []byte { return c.b }

// tailBuffer keeps the last keep bytes written to it (and at most twice
// that in memory).
type tailBuffer struct {
	keep int
	b    []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > t.keep {
		p = p[len(p)-t.keep:]
	}
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.keep {
		t.b = append(t.b[:0], t.b[len(t.b)-t.keep:]...)
	}
	return n, nil
}

// Bytes returns the last keep bytes written.
func (t *tailBuffer) Bytes() []byte {
	if len(t.b) > t.keep {
		return t.b[len(t.b)-t.keep:]
	}
	return t.b
}

// tail is the last n bytes of b, trimmed, cut at a character's start,
// with bytes that are not UTF-8 as U+FFFD: it is quoted in an error,
// which Temporal sends as a protobuf string (one that is not UTF-8 is
// never sent).
func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
		for i := 0; i < utf8.UTFMax && i < len(b) && !utf8.RuneStart(b[0]); i++ {
			b = b[1:]
		}
	}
	return taskmanager.ValidUTF8(string(b))
}
