package bridge

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A TaskManager whose database finds a type by a name that differs in
// case answers with its own name, and its tasks carry that name: a bridge
// with a handler "Example.Echo" would claim tasks "example.echo" and find
// no handler for them. Each way of choosing types refuses it at start.
func TestLookupTypes_name_that_differs_in_case_is_refused(t *testing.T) {
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: checkKey})
	h := tm.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, ok := strings.CutPrefix(r.URL.Path, "/api/task-types/"); ok && r.Method == http.MethodGet {
			r.URL.Path, r.URL.RawPath = "/api/task-types/"+strings.ToLower(name), "" // a case-insensitive collation
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: checkKey})
	require.NoError(t, err)
	et := devserver.ExampleTypes()[0]
	tt, err := api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: et.Name, Version: "1", ParamSchema: []byte(et.Schema)})
	require.NoError(t, err)
	upper := strings.ToUpper(et.Name[:1]) + et.Name[1:]

	for _, args := range [][]string{nil, {"--task-types=" + upper}, {"--task-type-ids=" + string(tt.ID)}} {
		cfg, err := Load(append([]string{"--api-url=" + srv.URL + "/api"}, args...), []string{"TASKMANAGER_API_KEY=" + checkKey}, io.Discard)
		require.NoError(t, err)
		got := lookupTypes(context.Background(), cfg, []string{upper}, api, false)
		require.Len(t, got, 1, "%v", args)
		require.ErrorContains(t, got[0].Err, `type "`+upper+`": TaskManager answers its lookup with type "`+et.Name+`"`, "%v", args)
	}
}
