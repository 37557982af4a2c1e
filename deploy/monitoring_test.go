package deploy_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// decodeStrict decodes YAML into v, refusing keys v has no field for.
func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(v))
}

type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// Prometheus scrapes tmbridge and the Temporal server where the prod
// profile runs them.
func TestPrometheus_scrapes_the_compose_services(t *testing.T) {
	t.Parallel()
	var cfg promConfig
	decodeStrict(t, readFile(t, "deploy", "prometheus", "prometheus.yml"), &cfg)
	targets := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		require.Contains(t, []string{"", "/metrics"}, sc.MetricsPath, sc.JobName)
		for _, st := range sc.StaticConfigs {
			targets[sc.JobName] = append(targets[sc.JobName], st.Targets...)
		}
	}
	require.Equal(t, map[string][]string{
		"tmbridge":        {"tmbridge:" + strconv.Itoa(metricsPort)},
		"temporal-server": {"temporal-server:8000"},
	}, targets)

	prod := loadCompose(t, "prod")
	for _, ts := range targets {
		for _, target := range ts {
			host, _, err := net.SplitHostPort(target)
			require.NoError(t, err)
			require.Contains(t, prod.ServiceNames(), host)
		}
	}
	// The server's metrics endpoint is the port scraped.
	endpoint := prod.Services["temporal-server"].Environment["PROMETHEUS_ENDPOINT"]
	require.NotNil(t, endpoint)
	_, port, err := net.SplitHostPort(*endpoint)
	require.NoError(t, err)
	require.Equal(t, "8000", port)

	// compose mounts this file where Prometheus reads its config, and each
	// rule file where the config names it (relative to the config's
	// directory). bridge/metricnames_test.go checks the rules' metrics.
	mountedAt(t, "prometheus", repoPath("deploy", "prometheus", "prometheus.yml"), "/etc/prometheus/prometheus.yml")
	require.Equal(t, []string{"alerts.yml"}, cfg.RuleFiles)
	for _, f := range cfg.RuleFiles {
		mountedAt(t, "prometheus", repoPath("deploy", "prometheus", f), "/etc/prometheus/"+f)
	}
}

// mountedAt asserts that the prod profile's service mounts the host path
// src at target.
func mountedAt(t *testing.T, service, src, target string) {
	t.Helper()
	abs, err := filepath.Abs(src)
	require.NoError(t, err)
	for _, v := range loadCompose(t, "prod").Services[service].Volumes {
		if v.Source == abs {
			require.Equal(t, target, v.Target, "%s mounts %s", service, src)
			return
		}
	}
	t.Fatalf("%s does not mount %s", service, src)
}

func TestGrafana_provisioning(t *testing.T) {
	t.Parallel()
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			Access    string `yaml:"access"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
			Editable  bool   `yaml:"editable"`
		} `yaml:"datasources"`
	}
	decodeStrict(t, readFile(t, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	require.Equal(t, 1, ds.APIVersion)
	require.Len(t, ds.Datasources, 1)
	d := ds.Datasources[0]
	require.Equal(t, "prometheus", d.Type)
	require.True(t, d.IsDefault, "the dashboards use the default data source")
	u, err := url.Parse(d.URL)
	require.NoError(t, err)
	require.Equal(t, "prometheus:9090", u.Host, "the prod profile's prometheus service")
	require.Contains(t, loadCompose(t, "prod").ServiceNames(), u.Hostname())

	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name            string `yaml:"name"`
			Folder          string `yaml:"folder"`
			Type            string `yaml:"type"`
			DisableDeletion bool   `yaml:"disableDeletion"`
			AllowUIUpdates  bool   `yaml:"allowUiUpdates"`
			Options         struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeStrict(t, readFile(t, "deploy", "grafana", "provisioning", "dashboards", "tmbridge.yml"), &dash)
	require.Equal(t, 1, dash.APIVersion)
	require.Len(t, dash.Providers, 1)
	require.Equal(t, "file", dash.Providers[0].Type)
	mountedAt(t, "grafana", repoPath("deploy", "grafana", "dashboards"), dash.Providers[0].Options.Path)
	mountedAt(t, "grafana", repoPath("deploy", "grafana", "provisioning"), "/etc/grafana/provisioning")
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"` // a collapsed row's
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// exprs returns every PromQL query of the dashboard, by panel title.
func (d dashboard) exprs() map[string][]string {
	out := map[string][]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					out[p.Title] = append(out[p.Title], tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(repoPath("deploy", "grafana", "dashboards", "*.json"))
	require.NoError(t, err)
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d dashboard
		require.NoError(t, json.Unmarshal(b, &d), f)
		require.NotEmpty(t, d.Title, f)
		require.NotEmpty(t, d.exprs(), "%s has no query", f)
		out[filepath.Base(f)] = d
	}
	return out
}

// The metrics tmbridge serves (bridge/metrics.go), and the Go and process
// collectors' metrics its dashboard shows.
var bridgeMetrics = []string{
	"tmbridge_build_info",
	"tmbridge_claims_total",
	"tmbridge_claim_duration_seconds",
	"tmbridge_start_duration_seconds",
	"tmbridge_workflows_started_total",
	"tmbridge_workflows_finished_total",
	"tmbridge_tasks_in_flight",
	"tmbridge_max_in_flight",
	"tmbridge_runs_held",
	"tmbridge_oldest_claim_age_seconds",
	"tmbridge_claim_timeout_seconds",
	"tmbridge_report_attempts_total",
	"tmbridge_taskmanager_request_duration_seconds",
}

var collectorMetrics = []string{"process_resident_memory_bytes", "go_goroutines"}

// PromQL: what metricNames strips before reading names.
var (
	promStrings    = regexp.MustCompile(`"(\\.|[^"\\])*"|'(\\.|[^'\\])*'`)
	promMatchers   = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges     = regexp.MustCompile(`\[[^\[\]]*\]`)
	promLabelLists = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent      = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords   = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
)

// metricNames returns the metric names a PromQL query selects: every name
// left once strings, label matchers, ranges and label lists are removed,
// other than a function or aggregation (a name followed by "(") or a
// keyword.
func metricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, "{}")
	s = promRanges.ReplaceAllString(s, "[]")
	s = promLabelLists.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // a number's exponent or suffix (1e3, 0.5)
		}
		if strings.HasPrefix(strings.TrimSpace(s[loc[1]:]), "(") || slices.Contains(promKeywords, strings.ToLower(name)) {
			continue
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"tmbridge_claim_duration_seconds_bucket"}, metricNames(
		`histogram_quantile(0.95, sum by (le, endpoint) (rate(tmbridge_claim_duration_seconds_bucket{instance=~"$instance", x="a{b}"}[$__rate_interval])))`))
	require.Equal(t, []string{"a", "b_total"}, metricNames(`max(a) / on(instance) group_left(version) sum without (x) (b_total offset 5m) > bool 1e3`))
}

// Every query of tmbridge.json reads a metric tmbridge serves, and every
// metric tmbridge serves has a panel.
func TestGrafana_tmbridge_dashboard_reads_the_bridges_metrics(t *testing.T) {
	t.Parallel()
	d := loadDashboards(t)["tmbridge.json"]
	require.Equal(t, "tmbridge", d.UID)
	used := map[string]bool{}
	for title, exprs := range d.exprs() {
		for _, e := range exprs {
			names := metricNames(e)
			require.NotEmpty(t, names, "%s: %s", title, e)
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					base = strings.TrimSuffix(base, suffix)
				}
				require.True(t, slices.Contains(bridgeMetrics, base) || slices.Contains(collectorMetrics, n),
					"panel %q reads %s, which tmbridge does not serve", title, n)
				used[base] = true
			}
		}
	}
	for _, m := range bridgeMetrics {
		require.True(t, used[m], "no panel shows %s", m)
	}
}

// The Temporal dashboards are the published ones, byte for byte: from
// github.com/temporalio/dashboards at commit
// b5d9a1bc1888f73057f1639495e5773caad783ee, sdk/temporal-go-sdk-otel.json
// (the Go SDK's metrics through OpenTelemetry's Prometheus exporter, the
// names bridge/telemetry.go serves) and server/server-general.json.
// deploy/README.md says how to update them.
func TestGrafana_temporal_dashboards_are_the_published_ones(t *testing.T) {
	t.Parallel()
	want := map[string]string{
		"temporal-sdk.json":    "4d8c7169626404c5e1165ebb8cc0abf6ef008831f676973e5ed95f3ede01aa89",
		"temporal-server.json": "b1a02a0055083c12bffcb3e8b490aaccbc4e89660eb7c005283dd71b99a668d6",
	}
	for file, sum := range want {
		got := sha256.Sum256(readFile(t, "deploy", "grafana", "dashboards", file))
		require.Equal(t, sum, hex.EncodeToString(got[:]), "%s differs from the published dashboard", file)
	}
	dashboards := loadDashboards(t)
	require.Len(t, dashboards, 3, "tmbridge.json and the two Temporal dashboards")
	for title, exprs := range dashboards["temporal-sdk.json"].exprs() {
		for _, e := range exprs {
			for _, n := range metricNames(e) {
				require.True(t, strings.HasPrefix(n, "temporal_"), "%s: %s", title, n)
			}
		}
	}
}

// The alert rules select the job the scrape configs name, in compose
// (prometheus.yml) and on Kubernetes (kubernetes-scrape.yml), and the
// Kubernetes job keeps the Deployment's pods and scrapes the port and
// path their annotations give. (Found by a review: the rules said
// job="tmbridge", while Prometheus' usual annotation-based job names the
// pods "kubernetes-pods", so TmbridgeDown could never fire there.)
func TestPrometheus_alerts_select_the_job_that_scrapes_tmbridge(t *testing.T) {
	t.Parallel()
	jobs := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bjob="([^"]+)"`).FindAllStringSubmatch(string(readFile(t, "deploy", "prometheus", "alerts.yml")), -1) {
		jobs[m[1]] = true
	}
	require.Equal(t, map[string]bool{"tmbridge": true}, jobs, "the jobs the alert rules select")

	var k8s struct {
		ScrapeConfigs []struct {
			JobName             string              `yaml:"job_name"`
			KubernetesSDConfigs []map[string]string `yaml:"kubernetes_sd_configs"`
			RelabelConfigs      []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string   `yaml:"regex"`
				Action       string   `yaml:"action"`
				Replacement  string   `yaml:"replacement"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeStrict(t, readFile(t, "deploy", "prometheus", "kubernetes-scrape.yml"), &k8s)
	require.Len(t, k8s.ScrapeConfigs, 1)
	sc := k8s.ScrapeConfigs[0]
	require.Equal(t, "tmbridge", sc.JobName)
	require.Equal(t, []map[string]string{{"role": "pod"}}, sc.KubernetesSDConfigs)

	// What Prometheus' pod discovery shows of the Deployment's pods.
	pod := loadManifests(t).deployment.Spec.Template
	meta := map[string]string{"__address__": "10.0.0.7"}
	sanitize := regexp.MustCompile(`[^a-zA-Z0-9_]`)
	for k, v := range pod.Labels {
		meta["__meta_kubernetes_pod_label_"+sanitize.ReplaceAllString(k, "_")] = v
	}
	for k, v := range pod.Annotations {
		meta["__meta_kubernetes_pod_annotation_"+sanitize.ReplaceAllString(k, "_")] = v
	}
	kept := 0
	for _, rc := range sc.RelabelConfigs {
		values := make([]string, len(rc.SourceLabels))
		for i, l := range rc.SourceLabels {
			values[i] = meta[l]
		}
		re := regexp.MustCompile("^(?:" + rc.Regex + ")$")
		joined := strings.Join(values, ";")
		switch rc.Action {
		case "keep":
			require.Regexp(t, re, joined, "the Deployment's pods are kept (%v)", rc.SourceLabels)
			kept++
		case "", "replace":
			if m := re.FindStringSubmatchIndex(joined); m != nil {
				meta[rc.TargetLabel] = string(re.ExpandString(nil, strings.NewReplacer("$1", "${1}", "$2", "${2}").Replace(cmp.Or(rc.Replacement, "$1")), joined, m))
			}
		}
	}
	require.Equal(t, 2, kept)
	require.Equal(t, "10.0.0.7:"+strconv.Itoa(metricsPort), meta["__address__"], "the port scraped")
	require.Equal(t, "/metrics", meta["__metrics_path__"])
	require.Equal(t, int32(metricsPort), pod.Spec.Containers[0].Ports[0].ContainerPort)
}
