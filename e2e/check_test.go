package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// runCommand runs `tmbridge <cmd>` with the stack's flags and env, extra
// flags after them. The command's own bounds make a dead endpoint a
// FAIL; the test's deadline only guards against a hang.
func (s *stack) runCommand(cmd string, env []string, extra ...string) (code int, stdout string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, bin("tmbridge"), append([]string{cmd}, s.args("check-worker", extra...)...)...)
	c.Env = env
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	require.NoError(s.t, ctx.Err(), "tmbridge %s hung", cmd)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(s.t, err)
	}
	all := out.String() + errOut.String()
	require.NotContains(s.t, all, apiKey, "tmbridge %s never prints the API key", cmd)
	if s.t.Failed() || os.Getenv("E2E_VERBOSE") != "" {
		s.t.Logf("tmbridge %s:\n%s", cmd, all)
	}
	return c.ProcessState.ExitCode(), out.String()
}

// requireRow checks that check's table has a row check with result and
// a detail matching detail (a regexp).
func requireRow(t testing.TB, table, check, result, detail string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(check) + ` +` + result + ` +.*` + detail)
	require.Regexp(t, re, table)
}

// Against a stack that has all the bridge needs, in both answer styles,
// every row passes and check exits 0.
func TestE2E_check_passes_on_a_good_stack(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			if why := missingSearchAttributes(t, s.tc); why != "" {
				t.Skipf("%s=external: %s, so check fails on them", externalEnv, why)
			}
			s.register("example.echo", "example.uppercase", "example.math.add", "example.sleep", "example.error")
			code, out := s.runCommand("check", s.environ())
			require.Zero(t, code, out)
			require.Regexp(t, `^CHECK +RESULT +DETAIL\n`, out)
			require.NotRegexp(t, `(?m)^\S.* +(FAIL|SKIP|WARN) `, out)
			requireRow(t, out, "TaskManager reachable", "PASS", regexp.QuoteMeta(s.url)+`: healthy`)
			requireRow(t, out, "TaskManager API key", "PASS", "accepted")
			requireRow(t, out, "type example.echo", "PASS", "registered in TaskManager, id ")
			requireRow(t, out, "handler example.echo", "PASS", "Go handler example.echo")
			requireRow(t, out, "Temporal reachable", "PASS", regexp.QuoteMeta(temporalConnRow(temporalAddr)))
			requireRow(t, out, "namespace "+temporalNamespace, "PASS", "exists")
			requireRow(t, out, "search attributes", "PASS", "TaskType, TaskID are Keyword")
			require.Regexp(t, `\nall \d+ checks passed\n$`, out)
		})
	}
}

// Each thing wrong is a FAIL row of its own and exit status 1.
func TestE2E_check_fails_clearly(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")

	t.Run("wrong API key", func(t *testing.T) {
		wrong := "wrong-" + apiKey
		code, out := s.runCommand("check", append([]string{"TASKMANAGER_API_KEY=" + wrong}, temporalEnv...))
		require.Equal(t, 1, code, out)
		require.NotContains(t, out, wrong)
		requireRow(t, out, "TaskManager API key", "FAIL", `API key rejected \(401\)`)
		requireRow(t, out, "task types", "SKIP", "TaskManager refused the API call")
		requireRow(t, out, "Temporal reachable", "PASS", "")
	})
	t.Run("type not registered in TaskManager", func(t *testing.T) {
		code, out := s.runCommand("check", s.environ(), "--task-types=example.echo,example.uppercase")
		require.Equal(t, 1, code, out)
		requireRow(t, out, "type example.echo", "PASS", "")
		requireRow(t, out, "type example.uppercase", "FAIL", `"example.uppercase" is not registered in TaskManager`)
		failed := 1
		if missingSearchAttributes(t, s.tc) != "" { // an external namespace may lack them: a FAIL of its own
			failed++
		}
		require.Regexp(t, fmt.Sprintf(`\n%d of \d+ checks failed\n$`, failed), out)
	})
	t.Run("Temporal unreachable", func(t *testing.T) {
		closed := freeAddr(t) // nothing listens there
		code, out := s.runCommand("check", s.environ(), "--temporal-address="+closed)
		require.Equal(t, 1, code, out)
		requireRow(t, out, "Temporal reachable", "FAIL", regexp.QuoteMeta(temporalConnRow(closed))+": .*connection refused")
		requireRow(t, out, "namespace "+temporalNamespace, "SKIP", "Temporal unreachable")
		requireRow(t, out, "search attributes", "SKIP", "Temporal unreachable")
		requireRow(t, out, "type example.echo", "PASS", "")
	})
	t.Run("namespace does not exist", func(t *testing.T) {
		code, out := s.runCommand("check", s.environ(), "--temporal-namespace=no-such-namespace")
		require.Equal(t, 1, code, out)
		requireRow(t, out, "namespace no-such-namespace", "FAIL", `namespace "no-such-namespace" does not exist`)
		requireRow(t, out, "search attributes", "SKIP", "no namespace")
	})
	t.Run("config error", func(t *testing.T) {
		code, out := s.runCommand("check", s.environ(), "--claim-sort-by=nope")
		require.Equal(t, bridge.ExitConfig, code, out)
	})
}

// On a new namespace, which lacks the search attributes (the dev server
// has them on the default namespace only: custom search attributes are
// per namespace), check fails on them; setup adds them; check then
// passes; setup again has nothing to do.
func TestE2E_setup_adds_search_attributes(t *testing.T) {
	skipExternal(t, "it registers namespaces of its own on the server")
	s := newStack(t, devserver.StyleDocumented)
	s.register("example.echo")
	ns := fmt.Sprintf("tmbridge-setup-%06d", rand.IntN(1_000_000))
	registerNamespace(t, ns)
	nsFlag := "--temporal-namespace=" + ns

	code, out := s.runCommand("check", s.environ(), nsFlag)
	require.Equal(t, 1, code, out)
	requireRow(t, out, "namespace "+ns, "PASS", "exists")
	requireRow(t, out, "search attributes", "FAIL", "missing TaskType, TaskID .*run `tmbridge setup`")

	code, out = s.runCommand("setup", s.environ(), nsFlag)
	require.Zero(t, code, out)
	require.Equal(t, "namespace "+ns+": added search attributes TaskType, TaskID (Keyword)\n", out)

	code, out = s.runCommand("check", s.environ(), nsFlag, "--task-types=example.echo")
	require.Zero(t, code, out)
	requireRow(t, out, "search attributes", "PASS", "TaskType, TaskID are Keyword")
	require.Regexp(t, `\nall \d+ checks passed\n$`, out)

	code, out = s.runCommand("setup", s.environ(), nsFlag)
	require.Zero(t, code, out)
	require.Equal(t, "namespace "+ns+": search attributes TaskType, TaskID already present (Keyword): nothing to do\n", out)

	// The default namespace is untouched: it had them from the start.
	code, out = s.runCommand("setup", s.environ())
	require.Zero(t, code, out)
	require.Contains(t, out, "namespace default: search attributes TaskType, TaskID already present")
}

// registerNamespace registers a namespace on the dev server and waits
// until its search attributes can be listed (a new namespace reaches the
// frontend's cache shortly after).
func registerNamespace(t *testing.T, ns string) {
	t.Helper()
	nc, err := client.NewNamespaceClient(client.Options{HostPort: temporalAddr, Logger: quietLogger{}})
	require.NoError(t, err)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, nc.Register(ctx, &workflowservice.RegisterNamespaceRequest{Namespace: ns, WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour)}))
	tc := dial(t, temporalAddr)
	for {
		_, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("namespace %s not usable: %v", ns, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
