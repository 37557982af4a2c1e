package bridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every tmbridge_* metric the shipped Grafana dashboard
// (deploy/grafana/dashboards/tmbridge.json) queries is one the bridge
// exports, and every one it exports has a panel. deploy/monitoring_test.go
// checks the dashboard's queries in full.
func TestMetricNames_dashboard_queries_exported_metrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "dashboards", "tmbridge.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	names := exportedNames(t)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range bridgeMetricName.FindAllString(tg.Expr, -1) {
				require.True(t, names[name], "panel %q queries %s, which the bridge does not export", p.Title, name)
				used[name] = true
			}
		}
	}
	for name := range names {
		if !strings.HasPrefix(name, "tmbridge_") {
			continue
		}
		isSeries := false // a histogram's _bucket, _sum or _count
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
				isSeries = true
			}
		}
		if !isSeries {
			shown := used[name] || used[name+"_bucket"] || used[name+"_count"] || used[name+"_sum"]
			require.True(t, shown, "no panel of tmbridge.json shows %s", name)
		}
	}
}
