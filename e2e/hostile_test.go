package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// Hostile handlers, run by the tmbridge binary against a real Temporal
// server: an http endpoint that redirects to another origin, an http URL
// that is down and carries tokens in its query and userinfo, exec commands
// that flood stdout, and one that leaves a setsid child holding stdout
// open. Ordinary tasks still complete, every task ends final, the hostile
// ones as the README says, and no secret (TaskManager's API key, Temporal's
// API key, a handler's header token, a URL's query or userinfo token)
// shows in any channel: the bridge's stdout and stderr (--debug), --help,
// TaskManager's task states and calls, every Temporal history, list entry
// and description of the test's workflows, and /metrics. The bridge's peak
// RSS stays far below the 300 MB a flood writes.
func TestE2E_Hostile_handlers_leak_nothing(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	work := t.TempDir()

	secret := func(kind string) string { return fmt.Sprintf("%s-%016x", kind, rand.Uint64()) }
	temporalKey := secret("temporal-api-key")
	if external { // the cluster's own key, if it has one, is the one to look for
		temporalKey = os.Getenv("TEMPORAL_API_KEY")
	}
	headerToken := secret("hook-header-token")
	queryToken := secret("url-query-token")
	userToken := secret("url-userinfo-token")
	secrets := map[string]string{
		"TaskManager API key (TASKMANAGER_API_KEY)": apiKey,
		"Temporal API key (TEMPORAL_API_KEY)":       temporalKey,
		"handler header token (headers_from_env)":   headerToken,
		"URL query token (?token=)":                 queryToken,
		"URL userinfo token (user:token@)":          userToken,
	}
	if temporalKey == "" {
		delete(secrets, "Temporal API key (TEMPORAL_API_KEY)")
	}
	paramsMarker := secret("params-marker") // not a secret: the params the other origin must not get

	// The other origin: it records every request it gets. It must get none.
	var (
		mu          sync.Mutex
		otherGot    []string
		hookHits    int
		hookHeaders []string
	)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		otherGot = append(otherGot, fmt.Sprintf("%s %s headers=%v body=%s", r.Method, r.URL, r.Header, body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"stolen":true}`)
	}))
	t.Cleanup(other.Close)
	// The handler's endpoint: it gets the token, and answers 307 to the other origin.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		hookHits++
		hookHeaders = append(hookHeaders, r.Header.Get("Authorization"), r.Header.Get("X-Hook-Token"))
		mu.Unlock()
		http.Redirect(w, r, other.URL+"/collect", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(hook.Close)
	require.NotEqual(t, hostPort(t, hook.URL), hostPort(t, other.URL))

	// A URL that is down: a closed port on 127.0.0.1.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downAddr := l.Addr().String()
	require.NoError(t, l.Close())
	downURL := fmt.Sprintf("http://svc:%s@%s/hook?token=%s", userToken, downAddr, queryToken)

	// Each attempt of a flood appends its shell's pid, its process group
	// (the handler runs it with Setpgid); the setsid child its own pid.
	floodPgids := filepath.Join(work, "flood.pgids")
	setsidPids := filepath.Join(work, "setsid.pids")
	t.Cleanup(func() { // whatever happened, leave no process behind
		for _, pgid := range readPids(floodPgids) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		for _, pid := range readPids(setsidPids) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// One Temporal attempt per claim; the dev TaskManager still hands a
	// failed task out again until its 3 attempts are spent.
	oneAttempt := map[string]any{"maximum_attempts": 1}
	config := map[string]any{ // YAML is a superset of JSON: no quoting to get wrong
		"types": map[string]any{
			"hostile.redirect": map[string]any{
				"retry": oneAttempt,
				"http": map[string]any{
					"url":              hook.URL + "/hook",
					"headers_from_env": map[string]any{"Authorization": "HOSTILE_TOKEN", "X-Hook-Token": "HOSTILE_TOKEN"},
				},
			},
			"hostile.down": map[string]any{
				"retry": oneAttempt,
				"http":  map[string]any{"url": downURL, "headers_from_env": map[string]any{"X-Hook-Token": "HOSTILE_TOKEN"}},
			},
			"hostile.flood": map[string]any{
				"retry": oneAttempt,
				"exec": map[string]any{
					// A background sleep in the group shows whether the whole
					// group was killed: only a group kill ends it.
					"command": []string{"/bin/sh", "-c", "echo $$ >> " + floodPgids + "; sleep 600 & yes AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA | head -c 300000000"},
					"env":     []string{"PATH"},
				},
			},
			"hostile.setsid": map[string]any{
				"retry": oneAttempt,
				"exec": map[string]any{
					"command": []string{"/bin/sh", "-c", `setsid /bin/sh -c 'echo $$ >> ` + setsidPids + `; exec sleep 600' & echo '{"detached":true}'`},
					"env":     []string{"PATH"},
				},
			},
		},
	}
	rawCfg, err := json.MarshalIndent(config, "", "  ")
	require.NoError(t, err)
	cfgFile := filepath.Join(work, "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, rawCfg, 0o600))

	s.register("example.echo", "hostile.redirect", "hostile.down", "hostile.flood", "hostile.setsid")
	echoes := map[string]string{}
	for i := range 6 {
		msg := fmt.Sprintf("ordinary %d", i)
		echoes[s.create("example.echo", map[string]any{"message": msg})] = msg
	}
	redirectID := s.create("hostile.redirect", map[string]any{"marker": paramsMarker})
	downID := s.create("hostile.down", map[string]any{"n": 1})
	floodIDs := []string{s.create("hostile.flood", map[string]any{"n": 1}), s.create("hostile.flood", map[string]any{"n": 2})}
	setsidID := s.create("hostile.setsid", map[string]any{"n": 1})
	ids := append([]string{redirectID, downID, setsidID}, floodIDs...)
	for id := range echoes {
		ids = append(ids, id)
	}

	env := append(s.environ(), "HOSTILE_TOKEN="+headerToken, "PATH="+os.Getenv("PATH"))
	if !external {
		env = append(env, "TEMPORAL_API_KEY="+temporalKey, "TEMPORAL_TLS=false") // plain dev server; it ignores the key
	}

	// --help, with the same environment and config.
	help := exec.Command(bin("tmbridge"), "--help", "--config="+cfgFile)
	help.Env = env
	var helpOut, helpErr bytes.Buffer
	help.Stdout, help.Stderr = &helpOut, &helpErr
	require.NoError(t, help.Run(), "--help exits 0")
	require.Contains(t, helpOut.String(), "Usage:")

	// The bridge.
	l, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := l.Addr().String()
	require.NoError(t, l.Close())
	b := startBridgeBinary(t, s, env, "hostile", "--config="+cfgFile, "--debug", "--metrics-addr="+metricsAddr)

	states := s.waitFinal(ids)
	t.Logf("every task final %s after the bridge started", time.Since(b.started).Round(100*time.Millisecond))
	floodLive := map[int][]string{}
	for _, pgid := range readPids(floodPgids) {
		floodLive[pgid] = liveInGroup(pgid)
	}
	setsidAlive := map[int]bool{}
	for _, pid := range readPids(setsidPids) {
		setsidAlive[pid] = alive(pid)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	metricsText, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	peakMB := b.stop(t)
	stdout, stderr := b.stdout.String(), b.stderr.String()

	t.Run("ordinary tasks complete", func(t *testing.T) {
		for id, msg := range echoes {
			require.Equal(t, "completed", states[id].Status, "task %s: %s", id, states[id].Error)
			require.JSONEq(t, fmt.Sprintf(`{"echo":%q,"length":%d}`, msg, len(msg)), string(states[id].Result))
		}
		s.requireOneOutcomeEach(ids)
	})

	t.Run("redirect to another origin fails and sends it nothing", func(t *testing.T) {
		st := states[redirectID]
		require.Equal(t, "failed", st.Status)
		require.Contains(t, st.Error, fmt.Sprintf("redirect from %s to %s refused", hook.URL, other.URL))
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, st.Attempts, hookHits, "the endpoint was called once a claim (one Temporal attempt each)")
		for _, h := range hookHeaders {
			require.Equal(t, headerToken, h, "the endpoint itself got the token")
		}
		require.Empty(t, otherGot, "the other origin got no request: no token, no params")
	})

	t.Run("a URL that is down fails, its URL redacted", func(t *testing.T) {
		st := states[downID]
		require.Equal(t, "failed", st.Status)
		require.Contains(t, st.Error, "POST http://"+downAddr+"/hook: ")
		require.Contains(t, st.Error, "connection refused")
	})

	t.Run("a stdout flood fails and its process group is killed", func(t *testing.T) {
		for _, id := range floodIDs {
			st := states[id]
			require.Equal(t, "failed", st.Status)
			require.Contains(t, st.Error, "/bin/sh killed: stdout passed 1048576 bytes")
		}
		attempts := 0
		for _, id := range floodIDs {
			attempts += states[id].Attempts
		}
		require.Len(t, floodLive, attempts, "every attempt of every flood ran (each a process group of its own)")
		for pgid := range floodLive {
			var live []string
			// SIGKILL was sent before the outcome; give the kernel a moment to reap.
			require.Eventually(t, func() bool { live = liveInGroup(pgid); return len(live) == 0 }, 10*time.Second, 50*time.Millisecond,
				"process group %d still alive: %v", pgid, live)
		}
	})

	t.Run("a setsid child holding stdout does not hold the task", func(t *testing.T) {
		st := states[setsidID]
		// What the product does: the command exited 0 and wrote its result,
		// so once the 3 s WaitDelay passed the read is cut and the task
		// completes with what was read, on its first attempt.
		require.Equal(t, "completed", st.Status, st.Error)
		require.JSONEq(t, `{"detached":true}`, string(st.Result))
		require.Equal(t, 1, st.Attempts)
		require.Len(t, setsidAlive, 1, "one setsid child")
		for pid, a := range setsidAlive {
			require.True(t, a, "setsid child %d still ran when the task completed: the handler did not wait for it", pid)
		}
		h := s.history(s.prefix + setsidID)
		if d, ok := activityDuration(h, "hostile.setsid"); ok {
			t.Logf("hostile.setsid attempt took %s (WaitDelay is 3 s)", d.Round(10*time.Millisecond))
		}
	})

	t.Run("no secret in any channel", func(t *testing.T) {
		channels := map[string]string{
			"bridge stdout": stdout,
			"bridge stderr": stderr,
			"--help stdout": helpOut.String(),
			"--help stderr": helpErr.String(),
			"/metrics":      string(metricsText),
		}
		mu.Lock()
		channels["the other host"] = strings.Join(otherGot, "\n")
		mu.Unlock()
		require.Contains(t, stderr, `"api_key":"set (redacted)"`, "the banner is in the grepped logs")
		if temporalKey != "" {
			require.Contains(t, stderr, `"temporal_api_key":"set (redacted)"`, "the Temporal API key reached the bridge")
		}
		require.Contains(t, string(metricsText), "tmbridge_claims_total")

		channels["TaskManager tasks, completions, progress"] = taskManagerText(s)
		temporal := temporalText(t, s)
		channels["Temporal histories, list, describe"] = temporal
		// The grep sees payloads decoded: the params and the failure texts.
		require.Contains(t, temporal, paramsMarker)
		require.Contains(t, temporal, "stdout passed 1048576 bytes")
		require.Contains(t, temporal, "POST http://"+downAddr+"/hook")

		require.Empty(t, leaks(channels, secrets), "secrets leaked")
	})

	t.Run("peak RSS stays bounded", func(t *testing.T) {
		require.Less(t, peakMB, 150.0, "a 300 MB flood is not buffered")
	})
}

// A hostile endpoint reflects what it was sent into its error answer: a
// 401 naming the header token it got and the URL it was called with,
// query and all (as many servers' error pages do). The task fails for
// good; neither the header token (headers_from_env) nor the URL's query
// token may reach TaskManager's error_message, Temporal history or the
// logs: SECURITY.md says headers are never written to errors, logs or
// history, and the TaskManager client already leaves out a foreign
// answer's message that holds its key.
func TestE2E_Hostile_endpoint_reflecting_its_token(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	headerToken := fmt.Sprintf("hook-header-token-%016x", rand.Uint64())
	queryToken := fmt.Sprintf("url-query-token-%016x", rand.Uint64())
	secrets := map[string]string{
		"handler header token (headers_from_env)": headerToken,
		"URL query token (?token=)":               queryToken,
	}
	reflect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("token %q is not valid for %s", r.Header.Get("X-Hook-Token"), r.URL.RequestURI())})
	}))
	t.Cleanup(reflect.Close)
	cfg, err := json.Marshal(map[string]any{"types": map[string]any{
		"hostile.reflect": map[string]any{
			"retry": map[string]any{"maximum_attempts": 1},
			"http":  map[string]any{"url": reflect.URL + "/hook?token=" + queryToken, "headers_from_env": map[string]any{"X-Hook-Token": "HOSTILE_TOKEN"}},
		},
	}})
	require.NoError(t, err)
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, cfg, 0o600))
	s.register("hostile.reflect")
	id := s.create("hostile.reflect", map[string]any{"n": 1})

	b := startBridgeBinary(t, s, append(s.environ(), "HOSTILE_TOKEN="+headerToken), "reflect", "--config="+cfgFile, "--debug")
	st := s.waitFinal([]string{id})[id]
	b.stop(t)

	require.Equal(t, "failed", st.Status)
	require.Contains(t, st.Error, "POST "+reflect.URL+"/hook: 401 Unauthorized")
	require.Empty(t, leaks(map[string]string{
		"bridge stdout": b.stdout.String(),
		"bridge stderr": b.stderr.String(),
		"TaskManager tasks, completions, progress": taskManagerText(s),
		"Temporal histories, list, describe":       temporalText(t, s),
	}, secrets), "secrets the endpoint reflected leaked")
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	i := strings.Index(raw, "://")
	require.Positive(t, i)
	return raw[i+3:]
}

// readPids reads one pid a line; a missing file is none.
func readPids(path string) []int {
	b, _ := os.ReadFile(path)
	var out []int
	seen := map[int]bool{}
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// procStat returns a process's state and process group from /proc.
func procStat(pid int) (state string, pgrp int, comm string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, "", false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, "", false
	}
	f := strings.Fields(s[end+1:]) // state ppid pgrp …
	if len(f) < 3 {
		return "", 0, "", false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0], pgrp, s[open+1 : end], true
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	state, _, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// liveInGroup lists the processes of a process group that are not zombies.
func liveInGroup(pgid int) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, pgrp, comm, ok := procStat(pid); ok && pgrp == pgid && state != "Z" && state != "X" {
			out = append(out, fmt.Sprintf("%d %s (%s)", pid, comm, state))
		}
	}
	return out
}

// protoText is every string and bytes field of m, recursively (payloads
// as their raw bytes, which protojson would show in base64), then m as
// protojson.
func protoText(m proto.Message) string {
	var b strings.Builder
	walkProto(&b, m.ProtoReflect())
	j, _ := protojson.Marshal(m)
	b.Write(j)
	b.WriteByte('\n')
	return b.String()
}

func walkProto(b *strings.Builder, m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			for i := range v.List().Len() {
				walkValue(b, fd, v.List().Get(i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				b.WriteString(k.String())
				b.WriteByte('\n')
				walkValue(b, fd.MapValue(), mv)
				return true
			})
		default:
			walkValue(b, fd, v)
		}
		return true
	})
}

func walkValue(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		walkProto(b, v.Message())
	case protoreflect.StringKind:
		b.WriteString(v.String())
		b.WriteByte('\n')
	case protoreflect.BytesKind:
		b.Write(v.Bytes())
		b.WriteByte('\n')
	}
}

// activityDuration is the time from the start of an activity of this type
// to its close, in a history.
func activityDuration(h *historypb.History, activityType string) (time.Duration, bool) {
	scheduled := map[int64]bool{}
	starts := map[int64]time.Time{}
	for _, ev := range h.Events {
		switch ev.EventType {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == activityType {
				scheduled[ev.EventId] = true
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if id := ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId(); scheduled[id] {
				starts[id] = ev.EventTime.AsTime()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			if start, ok := starts[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]; ok {
				return ev.EventTime.AsTime().Sub(start), true
			}
		}
	}
	return 0, false
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func around(s string, i, n int) string {
	return s[max(0, i-n/2):min(len(s), i+n/2)]
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// bridgeBinary is a tmbridge process with its stdout and stderr apart.
type bridgeBinary struct {
	cmd            *exec.Cmd
	stdout, stderr *bytes.Buffer
	started        time.Time
}

// startBridgeBinary runs tmbridge with s's flags, the extra ones and
// exactly the environment env.
func startBridgeBinary(t *testing.T, s *stack, env []string, workerID string, extra ...string) *bridgeBinary {
	t.Helper()
	return startBinaryArgs(t, s.args(workerID, extra...), env)
}

// startBinaryArgs starts the tmbridge binary with exactly these arguments.
func startBinaryArgs(t *testing.T, args, env []string) *bridgeBinary {
	t.Helper()
	b := &bridgeBinary{cmd: exec.Command(bin("tmbridge"), args...), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	b.cmd.Env = env
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	b.cmd.WaitDelay = 30 * time.Second // a process holding the bridge's stdout or stderr shows as an error, not a hang
	t.Cleanup(func() {
		if b.cmd.ProcessState == nil && b.cmd.Process != nil {
			_ = b.cmd.Process.Kill()
			_ = b.cmd.Wait()
		}
		if t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
			t.Logf("tmbridge stdout:\n%s\ntmbridge stderr (its last 20000 bytes):\n%s", b.stdout, lastBytes(b.stderr.String(), 20000))
		}
	})
	b.started = time.Now()
	require.NoError(t, b.cmd.Start())
	return b
}

// stop sends SIGTERM, requires exit 0 and returns the peak RSS in MB until
// the signal.
func (b *bridgeBinary) stop(t *testing.T) float64 {
	t.Helper()
	peak, err := peakRSS(b.cmd.Process.Pid)
	if err != nil {
		t.Errorf("the bridge's peak RSS: %v", err) // it exited: its status follows
	}
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, b.cmd.Wait(), "a stop by SIGTERM exits 0, its stdout and stderr closed")
	peakMB := float64(peak) / (1 << 20)
	t.Logf("bridge peak RSS: %.1f MB; ran %s", peakMB, time.Since(b.started).Round(100*time.Millisecond))
	return peakMB
}

// peakRSS is a running process's peak resident memory in bytes (VmHWM).
// Not the rusage of its exit: on Linux, a child started by fork and exec
// reports there the peak of the test process that forked it.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// taskManagerText is every task's state (result, error_message), every
// complete call and every progress call of s's TaskManager.
func taskManagerText(s *stack) string {
	var tm strings.Builder
	for _, st := range s.tm.Tasks() {
		fmt.Fprintf(&tm, "%+v\nresult=%s\nerror_message=%s\n", st, st.Result, st.Error)
		for _, c := range s.tm.Completions(st.ID) {
			fmt.Fprintf(&tm, "%+v\nresult=%s\n", c, c.Result)
		}
		for _, p := range s.tm.ProgressCalls(st.ID) {
			fmt.Fprintf(&tm, "%+v\n", p)
		}
	}
	return tm.String()
}

// temporalText is the list entry, full history and description of every
// run of every workflow of s (ids starting with s.prefix). Each claim
// starts one run: it waits until Temporal's visibility lists them all.
func temporalText(t *testing.T, s *stack) string {
	t.Helper()
	ctx := context.Background()
	var pages []*workflowservice.ListWorkflowExecutionsResponse
	claims := len(s.tm.Claims())
	require.Eventually(t, func() bool {
		pages = nil
		n := 0
		var token []byte
		for {
			r, err := s.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
				Query: fmt.Sprintf("WorkflowId STARTS_WITH %q", s.prefix), NextPageToken: token,
			})
			if err != nil {
				return false
			}
			pages = append(pages, r)
			n += len(r.Executions)
			if token = r.NextPageToken; len(token) == 0 {
				break
			}
		}
		return n == claims
	}, time.Minute, 200*time.Millisecond, "one run per claim (%d) in Temporal's visibility", claims)
	var out strings.Builder
	runs, events := 0, 0
	for _, r := range pages {
		out.WriteString(protoText(r))
		for _, e := range r.Executions {
			runs++
			wfID, runID := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
			it := s.tc.GetWorkflowHistory(ctx, wfID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				require.NoError(t, err)
				out.WriteString(protoText(ev))
				events++
			}
			d, err := s.describe(ctx, wfID, runID)
			require.NoError(t, err)
			out.WriteString(protoText(d))
		}
	}
	t.Logf("grepped %d runs (%d history events, %d bytes) in Temporal", runs, events, out.Len())
	return out.String()
}

// leaks names each secret found in each channel, with some context.
func leaks(channels, secrets map[string]string) []string {
	var out []string
	for _, ch := range sortedNames(channels) {
		text := channels[ch]
		for _, what := range sortedNames(secrets) {
			if i := strings.Index(text, secrets[what]); i >= 0 {
				out = append(out, fmt.Sprintf("%s in %s (%d times), e.g. …%s…", what, ch, strings.Count(text, secrets[what]), around(text, i, 300)))
			}
		}
	}
	return out
}
