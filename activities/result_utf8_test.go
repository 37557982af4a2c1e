package activities_test

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
)

// A command (or endpoint) writes its JSON result with a Latin-1 byte in a
// string. json.Valid takes it; TaskManager (PHP's json_decode) would refuse
// it. The handler activity returns it with U+FFFD, as its error messages:
// the run's history and later steps see what TaskManager will store.
func TestHandler_result_that_is_not_utf8_is_sent_as_utf8(t *testing.T) {
	reg := activities.NewRegistry()
	require.NoError(t, reg.Add("t.latin1", activities.Exec(activities.ExecConfig{Command: []string{"sh", "-c", `printf '{"file":"caf\351.txt"}'`}})))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: reg}).RegisterOn(env)
	val, err := env.ExecuteActivity("t.latin1", activities.HandlerInput{TaskID: "1", TaskType: "t.latin1", WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.NoError(t, err)
	var result json.RawMessage
	require.NoError(t, val.Get(&result))
	require.True(t, utf8.Valid(result), "the result TaskManager will be sent is not UTF-8: %q", result)
}
