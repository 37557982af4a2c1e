package activities

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"

	"github.com/prismq/tmbridge/internal/heldrun"
)

// Why a handler attempt reads the task before its handler runs, and when
// it does not.
func TestReadsFirst(t *testing.T) {
	token, release := heldrun.Hold()
	gone, releaseGone := heldrun.Hold()
	releaseGone()
	defer release()
	local := activity.Info{IsLocalActivity: true, Attempt: 1}
	regular := activity.Info{Attempt: 1}
	for _, c := range []struct {
		name string
		info activity.Info
		in   HandlerInput
		want string
	}{
		{"a first attempt", regular, HandlerInput{}, ""},
		{"a retried attempt", activity.Info{Attempt: 2}, HandlerInput{}, "retry"},
		{"a local rerun", local, HandlerInput{SkipIfDone: true}, "rerun"},
		{"a local step in a replay", local, HandlerInput{ReadFirst: true}, "replay"},
		{"a local handler of a run held", local, HandlerInput{RunToken: token}, ""},
		{"a local handler of a run gone", local, HandlerInput{RunToken: gone}, "run left the worker"},
		{"a local handler without a token", local, HandlerInput{}, ""},
		{"a regular handler given a token of a run gone", regular, HandlerInput{RunToken: gone}, ""},
	} {
		require.Equal(t, c.want, readsFirst(c.info, c.in), c.name)
	}
}
