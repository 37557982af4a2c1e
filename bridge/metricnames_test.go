package bridge

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// exportedNames are the names of the bridge's own metrics as Prometheus
// queries see them (a histogram's _bucket, _sum and _count).
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	m := newMetrics(nil)
	m.registerState(newAdmission(1, 0), 1, time.Minute)
	// Vectors show only once they have a series.
	m.claims.WithLabelValues("t", "claimed")
	m.claimDuration.WithLabelValues("t").Observe(1)
	m.startDuration.WithLabelValues("t").Observe(1)
	m.started.WithLabelValues("t")
	m.observeAPI("claim", 200, time.Second)
	fams, err := m.reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

// alertRule is a rule of deploy/prometheus/alerts.yml.
type alertRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

// alertRules reads every rule of the shipped alerts.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &file))
	var rules []alertRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

var bridgeMetricName = regexp.MustCompile(`\btmbridge_[a-z_]+`)

// Every tmbridge_* metric the shipped alert rules query is one the bridge
// exports: a renamed metric fails here, not silently in production.
func TestMetricNames_alert_rules_query_exported_metrics(t *testing.T) {
	rules := alertRules(t)
	names := exportedNames(t)
	n := 0
	for _, r := range rules {
		require.NotEmpty(t, r.Alert)
		for _, name := range bridgeMetricName.FindAllString(r.Expr, -1) {
			require.True(t, names[name], "alert %s queries %s, which the bridge does not export (it has %v)", r.Alert, name, slices.Sorted(func(yield func(string) bool) {
				for k := range names {
					if !yield(k) {
						return
					}
				}
			}))
			n++
		}
	}
	require.Greater(t, n, 5)
}

// PromQL's `and` (and `unless`) matches the left series with the right
// ones whose labels are the same exactly: sides with different labels
// never fire (or never silence). The shipped rules aggregate both sides
// of each by instance. (No PromQL engine here: the Prometheus module
// would upgrade gRPC and the Kubernetes API this repository pins.)
func TestMetricNames_alert_rules_match_both_sides_of_and(t *testing.T) {
	rules := alertRules(t)
	ands := 0
	for _, r := range rules {
		sides := regexp.MustCompile(`\b(and|unless)\b`).Split(r.Expr, -1)
		if len(sides) == 1 {
			continue
		}
		for _, side := range sides {
			ands++
			require.Regexp(t, `^\s*sum by \(instance\) \(`, side, "alert %s: each side of `and` is aggregated by instance", r.Alert)
		}
	}
	require.Positive(t, ands)
}

// The series the shipped alerts compare with `== 0` exist from the first
// scrape: TmbridgeAtCapacity's finished runs and claims that took a task. In PromQL `rate(x[15m]) == 0` of a metric without
// series is empty, and `A and <empty>` never fires: a bridge whose
// handlers hang from the start, or whose claims fail before one took a
// task, raised no alert. (Found by a review.)
func TestMetrics_series_alerts_compare_exist_before_their_first_event(t *testing.T) {
	m := newMetrics(nil)
	m.serveTypes([]servedType{{Name: "example.sleep"}})
	m.claims.WithLabelValues("example.sleep", "error").Inc()
	fams, err := m.reg.Gather()
	require.NoError(t, err)
	series := map[string]bool{}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			for _, l := range s.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			series[key] = true
		}
	}
	for _, want := range []string{
		"tmbridge_workflows_finished_total,result=reported", "tmbridge_workflows_finished_total,result=closed",
		"tmbridge_claims_total,result=claimed,task_type=example.sleep", "tmbridge_claims_total,result=empty,task_type=example.sleep",
		"tmbridge_report_attempts_total,result=ok",
	} {
		require.True(t, series[want], "%s: no series", want)
	}
}

// Each result a shipped rule selects is one the bridge counts: a rule on
// a result the code never writes would never fire. (Found by a review:
// exportedNames seeded a result "completed" that the bridge never has.)
func TestMetricNames_alert_rules_select_results_the_bridge_counts(t *testing.T) {
	results := map[string][]string{
		"tmbridge_claims_total":             claimResults,
		"tmbridge_report_attempts_total":    reportResults,
		"tmbridge_workflows_finished_total": finishedResults,
	}
	selector := regexp.MustCompile(`\b(tmbridge_[a-z_]+)\{([^}]*)\}`)
	matcher := regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	n := 0
	for _, r := range alertRules(t) {
		for _, sel := range selector.FindAllStringSubmatch(r.Expr, -1) {
			for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
				if m[1] == "status" {
					// HTTP statuses as observeAPI writes them (0: no
					// answer): 0, 401, 5.. — not 5xx.
					for _, v := range strings.Split(m[3], "|") {
						require.Regexp(t, `^(0|[1-5][0-9.]{2})$`, v, "alert %s: status %q is never written", r.Alert, v)
						n++
					}
					continue
				}
				if m[1] != "result" {
					continue
				}
				require.Contains(t, results, sel[1], "alert %s selects a result of %s, which has none", r.Alert, sel[1])
				values := []string{m[3]}
				if m[2] == "=~" || m[2] == "!~" {
					values = strings.Split(m[3], "|")
				}
				for _, v := range values {
					require.Contains(t, results[sel[1]], v, "alert %s: %s{result=%q} is never counted", r.Alert, sel[1], v)
					n++
				}
			}
		}
	}
	require.Positive(t, n)
	// And the bridge pre-creates each, so that rate() has a series at once.
	m := newMetrics(nil)
	m.serveTypes([]servedType{{Name: "t"}})
	fams, err := m.reg.Gather()
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "result" {
					seen[f.GetName()+"="+l.GetValue()] = true
				}
			}
		}
	}
	for name, values := range results {
		for _, v := range values {
			require.True(t, seen[name+"="+v], "%s{result=%q} is not pre-created", name, v)
		}
	}
}
