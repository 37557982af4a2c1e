package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"go.temporal.io/sdk/activity"
)

// ExecConfig runs a command as a task type's handler: params as JSON on
// stdin, the result as JSON on stdout.
type ExecConfig struct {
	// Command is the argv; no shell is involved. Required.
	Command []string `koanf:"command"`
	// Dir is the working directory (default: the bridge's).
	Dir string `koanf:"dir"`
	// Env lists the environment the command gets: NAME passes the bridge's
	// variable through, NAME=value sets one. Nothing else is passed but
	// TASK_ID, TASK_TYPE and TASK_ATTEMPT.
	Env []string `koanf:"env"`
	// PermanentExitCodes are exit codes that fail the task without retry.
	PermanentExitCodes []int `koanf:"permanent_exit_codes"`
}

// Validate reports what is wrong with the config.
func (c *ExecConfig) Validate() error {
	if len(c.Command) == 0 || strings.TrimSpace(c.Command[0]) == "" {
		return errors.New("exec.command: needs at least the program")
	}
	return nil
}

// stderrTail is how much of a failed command's stderr its error keeps.
const stderrTail = 2048

// Exec returns a Handler that runs the configured command. A non-zero exit
// fails the attempt with the tail of stderr (for good if the code is in
// PermanentExitCodes); cancellation or a timeout kills the whole process
// group; stdout that is not JSON fails the task for good.
func Exec(c ExecConfig) Handler {
	return HandlerFunc(func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
		cmd := exec.Command(c.Command[0], c.Command[1:]...)
		cmd.Dir = c.Dir
		cmd.Env = execEnv(ctx, c.Env)
		cmd.Stdin = bytes.NewReader(orEmptyObject(params))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, Permanent(fmt.Errorf("start %s: %w", c.Command[0], err))
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the whole group
			<-done
			return nil, fmt.Errorf("%s killed: %w", c.Command[0], ctx.Err())
		}
		if err != nil {
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				e := fmt.Errorf("%s exited with code %d: %s", c.Command[0], exitErr.ExitCode(), tail(stderr.Bytes(), stderrTail))
				if slices.Contains(c.PermanentExitCodes, exitErr.ExitCode()) {
					return nil, Permanent(e)
				}
				return nil, e
			}
			return nil, err
		}
		out := bytes.TrimSpace(stdout.Bytes())
		if len(out) == 0 {
			return json.RawMessage(`{}`), nil
		}
		if !json.Valid(out) {
			return nil, Permanent(fmt.Errorf("%s wrote a result that is not JSON: %q", c.Command[0], tail(out, 200)))
		}
		return out, nil
	})
}

func execEnv(ctx context.Context, allow []string) []string {
	var env []string
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

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func orEmptyObject(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}

// inputKey carries the HandlerInput in a handler's context.
type inputKey struct{}

// TaskInfo returns the task a handler runs for, when called in one.
func TaskInfo(ctx context.Context) (HandlerInput, bool) {
	in, ok := ctx.Value(inputKey{}).(HandlerInput)
	return in, ok
}
