package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/bridge"
)

// serviceUnit is deploy/systemd/tmbridge.service, by section and key
// (a key set more than once keeps every value, in order).
type serviceUnit map[string]map[string][]string

func (u serviceUnit) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func loadUnit(t *testing.T) serviceUnit {
	t.Helper()
	opts, err := unit.DeserializeOptions(bytes.NewReader(readFile(t, "deploy", "systemd", "tmbridge.service")))
	require.NoError(t, err)
	u := serviceUnit{}
	for _, o := range opts {
		if u[o.Section] == nil {
			u[o.Section] = map[string][]string{}
		}
		u[o.Section][o.Name] = append(u[o.Section][o.Name], o.Value)
	}
	return u
}

// timeSpan parses a systemd time span of seconds or minutes ("60", "60s",
// "2min"), the forms the unit uses.
func timeSpan(t *testing.T, s string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)\s*(s|sec|min|m)?$`).FindStringSubmatch(s)
	require.NotNil(t, m, "time span %q", s)
	n, _ := strconv.Atoi(m[1])
	if m[2] == "min" || m[2] == "m" {
		return time.Duration(n) * time.Minute
	}
	return time.Duration(n) * time.Second
}

func TestSystemd_unit(t *testing.T) {
	t.Parallel()
	u := loadUnit(t)
	require.Equal(t, []string{"multi-user.target"}, u["Install"]["WantedBy"])
	require.Contains(t, u["Unit"]["After"], "network-online.target")

	s := "Service"
	exec := strings.Fields(u.last(s, "ExecStart"))
	require.Equal(t, "/usr/local/bin/tmbridge", exec[0])
	require.True(t, filepath.IsAbs(flagValue(exec, "--config")), "ExecStart runs tmbridge with a config file")

	require.Contains(t, []string{"always", "on-failure"}, u.last(s, "Restart"))
	require.Contains(t, strings.Fields(u.last(s, "RestartPreventExitStatus")), "78", "a config error (exit 78) is not restarted")
	require.NotContains(t, []string{"", "root"}, u.last(s, "User"))

	// Stop: SIGTERM to tmbridge alone (its exec handlers get the grace
	// too), and a timeout past the bridge's own stop.
	require.Contains(t, []string{"", "SIGTERM", "TERM", "15"}, u.last(s, "KillSignal"))
	require.Equal(t, "mixed", u.last(s, "KillMode"), "SIGTERM to the main process only, SIGKILL to all at the timeout")
	grace := defaultConfig(t).ShutdownGrace
	require.Greater(t, timeSpan(t, u.last(s, "TimeoutStopSec")), bridge.StopTimeout(grace),
		"TimeoutStopSec must cover the bridge's stop with shutdown_grace %s", grace)

	for key, want := range map[string][]string{
		"NoNewPrivileges": {"yes", "true"},
		"ProtectSystem":   {"strict", "full"},
		"ProtectHome":     {"yes", "true", "read-only", "tmpfs"},
		"PrivateTmp":      {"yes", "true"},
		"PrivateDevices":  {"yes", "true"},
	} {
		require.Contains(t, want, u.last(s, key), key)
	}
	require.Equal(t, []string{""}, u[s]["CapabilityBoundingSet"], "no capabilities")
}

// The API key reaches tmbridge as a file: a systemd credential, never a
// value in the unit.
func TestSystemd_api_key_is_a_credential(t *testing.T) {
	t.Parallel()
	u := loadUnit(t)
	var keyFile string
	for _, e := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(e) {
			name, value, _ := strings.Cut(strings.Trim(kv, `"`), "=")
			require.NotEqual(t, "TASKMANAGER_API_KEY", name, "the key is not written in the unit")
			require.NotEqual(t, "TEMPORAL_API_KEY", name, "the key is not written in the unit")
			if name == "TASKMANAGER_API_KEY_FILE" {
				keyFile = value
			}
		}
	}
	credential, ok := strings.CutPrefix(keyFile, "%d/")
	require.True(t, ok, "TASKMANAGER_API_KEY_FILE is in the credentials directory (%%d), got %q", keyFile)
	var loaded []string
	for _, c := range u["Service"]["LoadCredential"] {
		id, _, _ := strings.Cut(c, ":")
		loaded = append(loaded, id)
	}
	require.Contains(t, loaded, credential)
}

// systemd-analyze verify, where the machine has it: every directive is one
// systemd knows, with a value it accepts. ExecStart points at a binary
// that exists here, since verify checks that too.
func TestSystemd_analyze_verify(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	self, err := os.Executable()
	require.NoError(t, err)
	text := strings.Replace(string(readFile(t, "deploy", "systemd", "tmbridge.service")),
		"ExecStart=/usr/local/bin/tmbridge", "ExecStart="+self, 1)
	f := filepath.Join(t.TempDir(), "tmbridge.service")
	require.NoError(t, os.WriteFile(f, []byte(text), 0o644))
	out, err := exec.Command(analyze, "verify", f).CombinedOutput()
	require.NoError(t, err, "%s", out)
	// Warnings (an unknown key, a bad value) exit 0: any output fails.
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(string(out)), "\n"), func(l string) bool { return l == "" })
	require.Empty(t, lines)
}
