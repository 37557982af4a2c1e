package workflows

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// Once the claim is found over, a newer claim that reached the run gets a
// run of its own unless a read showed it over too: the read that saw the
// task furthest on counts, not only the first. (Found by a review: the
// first judgement's read was kept, and a late signal of a claim a later
// read showed over got a run.)
func TestClaimState_newerMayHold(t *testing.T) {
	w1 := Claim{WorkerID: "w1", Attempts: 1}
	w2 := Claim{WorkerID: "w2", Attempts: 2}
	w3 := Claim{WorkerID: "w3", Attempts: 3}
	seenW2 := &activities.ClaimSeen{Status: "claimed", WorkerID: "w2", Attempts: 2}
	seenW3 := &activities.ClaimSeen{Status: "claimed", WorkerID: "w3", Attempts: 3}

	for name, tc := range map[string]struct {
		judge   func(st *claimState)
		current Claim
		want    bool
	}{
		"not over": {judge: func(*claimState) {}, current: w2, want: false},
		"the claim found over is current": {
			judge: func(st *claimState) { st.judgeOver(w1, "", seenW2) }, current: w1, want: false},
		"a newer claim the read saw": {
			judge: func(st *claimState) { st.judgeOver(w1, "", seenW2) }, current: w2, want: true},
		"a newer claim, after the read before a step (no ClaimSeen)": {
			judge: func(st *claimState) { st.judgeOver(w1, "", nil) }, current: w2, want: true},
		"a newer claim a later read showed over": {
			judge: func(st *claimState) { st.judgeOver(w1, "", seenW2); st.judgeOver(w1, "", seenW3) }, current: w2, want: false},
		"a later read that lags does not count": {
			judge: func(st *claimState) { st.judgeOver(w1, "", seenW3); st.judgeOver(w1, "", seenW2) }, current: w3, want: true},
		"after the read before a step, a retried attempt's read": {
			judge: func(st *claimState) { st.judgeOver(w1, "", nil); st.judgeOver(w1, "", seenW3) }, current: w2, want: false},
	} {
		st := &claimState{current: w1}
		tc.judge(st)
		st.current = tc.current
		require.Equal(t, tc.want, st.newerMayHold(), name)
	}
}
