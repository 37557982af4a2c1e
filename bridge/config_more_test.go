package bridge

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// A type with two routes is refused, naming both.
func TestLoad_two_routes_are_refused(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "types:\n  x: { exec: { command: [echo, \"{}\"] }, http: { url: \"http://hooks.example/x\" } }\n")
	_, err := Load([]string{"--config=" + file}, nil, &bytes.Buffer{})
	require.ErrorContains(t, err, "set one of exec, http, steps and workflow, not exec and http")
}

// Claim_sort_order is case-insensitive, sent upper-case.
func TestLoad_claim_sort_order_is_upper_cased(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"--claim-sort-order=desc"}, nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "DESC", cfg.ClaimSortOrder)
}

// A Secret logged with slog shows as [redacted].
func TestLoad_secret_in_slog_is_redacted(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	log.Info("x", "key", Secret("sk-live-0123456789"))
	log.Info("x", slog.Any("key", Secret("sk-live-0123456789")))
	require.NotContains(t, out.String(), "sk-live")
	require.Contains(t, out.String(), "[redacted]")
}
