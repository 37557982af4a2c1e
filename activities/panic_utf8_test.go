package activities_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
)

// A handler that panics with a value whose text is not UTF-8 (a Latin-1
// file name in the panic message) fails with a reportable error, as every
// other handler error is (ValidUTF8Error): Temporal refuses a failure that
// is not UTF-8, and the attempt would hang until its timeout.
func TestHandler_panic_with_non_utf8_value_is_reportable(t *testing.T) {
	err := handlerErrorOf(t, activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		panic("open caf\xe9.txt: no such file")
	}))
	require.True(t, activities.HasErrorType(err, activities.ErrTypePanic), "%v", err)
	requireReportable(t, err)
}

func handlerErrorOf(t *testing.T, h activities.Handler) error {
	t.Helper()
	reg := activities.NewRegistry()
	require.NoError(t, reg.Add("t.panic", h))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: reg}).RegisterOn(env)
	_, err := env.ExecuteActivity("t.panic", activities.HandlerInput{TaskID: "1", TaskType: "t.panic", WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.Error(t, err)
	return err
}
