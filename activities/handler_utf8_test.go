package activities_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"github.com/prismq/tmbridge/activities"
)

// requireReportable checks what the SDK does with a handler's error: it
// becomes a Failure proto in RespondActivityTaskFailed, which gRPC marshals.
// A proto3 string field that is not UTF-8 fails to marshal: the failure
// was never reported and the attempt hung until its timeout, its reason
// lost (found by a review).
func requireReportable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	f := temporal.GetDefaultFailureConverter().ErrorToFailure(err)
	_, merr := proto.Marshal(f)
	require.NoError(t, merr, "RespondActivityTaskFailed could not be sent")
}

// UTF-8 stderr longer than the 2048-byte tail: the cut splits a rune.
func TestExec_stderr_cut_mid_character_is_reported(t *testing.T) {
	h := activities.Exec(activities.ExecConfig{Command: []string{"sh", "-c",
		`i=0; while [ $i -lt 1500 ]; do printf 'é' >&2; i=$((i+1)); done; printf '!' >&2; exit 3`}})
	_, err := h.Handle(context.Background(), nil)
	requireReportable(t, err)
}

// A program writing Latin-1 to stderr (exit code marked permanent).
func TestExec_latin1_stderr_is_reported(t *testing.T) {
	h := activities.Exec(activities.ExecConfig{Command: []string{"sh", "-c", `printf 'caf\351 not found\n' >&2; exit 2`}, PermanentExitCodes: []int{2}})
	_, err := h.Handle(context.Background(), nil)
	requireReportable(t, err)
}

// An endpoint's UTF-8 error page longer than the 500-byte tail.
func TestHTTP_error_body_cut_mid_character_is_reported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(422)
		fmt.Fprint(w, strings.Repeat("é", 300)+"!")
	}))
	t.Cleanup(srv.Close)
	_, err := activities.HTTP(activities.HTTPConfig{URL: srv.URL}, nil).Handle(context.Background(), nil)
	requireReportable(t, err)
}

// A Go handler's error that is not UTF-8 is reported too, its type kept:
// its bad bytes become U+FFFD.
func TestHandler_error_that_is_not_utf8_is_reported(t *testing.T) {
	err := handlerError(t, fmt.Errorf("lookup: %w", activities.Permanent(errors.New("caf\xe9 not found"))))
	requireReportable(t, err)
	require.True(t, activities.IsPermanent(err))
	require.Contains(t, err.Error(), "lookup: caf\uFFFD not found")
}
