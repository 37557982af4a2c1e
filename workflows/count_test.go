package workflows

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The steps done that a failed group handled by on_failure adds: each
// member not counted yet, once, in a run whose handlers post progress; as
// before (every member, counted or not) in an older run, whose progress
// activities follow the count and whose history holds them.
func TestPipeline_count_of_a_failed_group(t *testing.T) {
	t.Parallel()
	group := Step{Name: "g", Parallel: []Step{{Name: "ok", Handler: "h"}, {Name: "bad", Handler: "h"}}}
	for _, c := range []struct {
		inHandlers bool
		want       int
	}{{inHandlers: true, want: 2}, {inHandlers: false, want: 3}} {
		p := &pipeline{inHandlers: c.inHandlers, counted: map[string]bool{}}
		p.count(group.Parallel[0]) // ok succeeded
		p.count(group)             // then the group failed and was handled
		require.Equal(t, c.want, p.done, "inHandlers %v", c.inHandlers)
		p.count(group) // counted again: never for a newer run
		require.Equal(t, map[bool]int{true: 2, false: 5}[c.inHandlers], p.done, "inHandlers %v", c.inHandlers)
	}
}
