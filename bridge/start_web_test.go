package bridge

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A run's static details link to its task; no secret of the API URL
// (userinfo, query) reaches Temporal.
func TestTaskLink_names_the_task_url_without_secrets(t *testing.T) {
	t.Parallel()
	for api, want := range map[string]string{
		"http://localhost:8000/api":                       "TaskManager task [42](http://localhost:8000/api/tasks/42)",
		"https://admin:s3cret@tm.example/api/?key=s3cret": "TaskManager task [42](https://tm.example/api/tasks/42)",
		"https://tm.example/api#s3cret":                   "TaskManager task [42](https://tm.example/api/tasks/42)",
	} {
		got := taskLink(api, "42")
		require.Equal(t, want, got)
		require.NotContains(t, got, "s3cret")
	}
	require.Equal(t, "TaskManager task [a/b](http://tm/api/tasks/a%2Fb)", taskLink("http://tm/api", "a/b"))
}
