//go:build linux

package bridge

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A command the bridge runs as its own user (an exec handler's) cannot
// read the bridge's environment from /proc once Main hid it. Before, a
// command could read TASKMANAGER_API_KEY there, though its own
// environment held only what the config gave it. (Found by a review.) The
// test runs itself again as an unprivileged user (root reads any
// process's /proc), so it needs root and setpriv.
func TestHideEnvironment_commands_cannot_read_the_bridges_environ(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if os.Geteuid() != 0 || err != nil {
		t.Skip("needs root and setpriv to run as another user")
	}
	// A copy of this test binary that the unprivileged user can run.
	dir, err := os.MkdirTemp("", "tmbridge-hide-env")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	bin := filepath.Join(dir, "bridge.test")
	require.NoError(t, os.WriteFile(bin, self, 0o755))
	for _, hide := range []bool{false, true} {
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestHideEnvironmentChild$")
		cmd.Env = []string{"TMBRIDGE_TEST_HIDE_ENV=1", "TMBRIDGE_TEST_SECRET=s3cret", "TMBRIDGE_TEST_HIDE=" + strconv.FormatBool(hide)}
		out, _ := cmd.CombinedOutput()
		if hide {
			require.NotContains(t, string(out), "s3cret", "the command read the bridge's environment")
			require.Contains(t, string(out), "Permission denied")
		} else {
			require.Contains(t, string(out), "s3cret", "without hiding it, the command reads it (the test works)")
		}
	}
}

// TestHideEnvironmentChild is the child of the test above: it hides its
// environment (or not) and runs a command that reads it from /proc.
func TestHideEnvironmentChild(t *testing.T) {
	if os.Getenv("TMBRIDGE_TEST_HIDE_ENV") == "" {
		t.Skip("run by TestHideEnvironment_commands_cannot_read_the_bridges_environ")
	}
	if os.Getenv("TMBRIDGE_TEST_HIDE") == "true" {
		require.NoError(t, hideEnvironment())
	}
	out, _ := exec.Command("/bin/sh", "-c", "cat /proc/"+strconv.Itoa(os.Getpid())+"/environ | tr '\\0' '\\n'").CombinedOutput()
	os.Stdout.WriteString(strings.TrimSpace(string(out)) + "\n")
}
