package devserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The PHP deployment reads every body with json_decode (ApiResponse::
// getRequestBody), which refuses bytes that are not UTF-8 (JSON_ERROR_UTF8)
// and answers 400 "Invalid JSON in request body"; so does the dev server
// (encoding/json alone would take them as U+FFFD).
func TestPHPStyle_refuses_a_body_that_is_not_utf8(t *testing.T) {
	srv := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	base := srv.Start(t)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: base, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "t.utf8", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateTask(ctx, "t.utf8", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	task, err := api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	body := "{\"worker_id\":\"w1\",\"success\":true,\"result\":{\"name\":\"caf\xe9\"}}"
	req, _ := http.NewRequest(http.MethodPost, base+"/tasks/"+string(task.ID)+"/complete", strings.NewReader(body))
	req.Header.Set("X-API-Key", "k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), "Invalid JSON in request body") {
		t.Fatalf("PHP answers 400 \"Invalid JSON in request body\" to a body that is not UTF-8; the dev server answered %d %s", resp.StatusCode, answer)
	}
}
