package taskmanager

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Decoding rules that no test pinned.
func TestDecode_decoding_refuses_what_it_cannot_represent(t *testing.T) {
	t.Parallel()
	var task Task
	require.Error(t, json.Unmarshal([]byte(`{"id":1,"params":"not json"}`), &task), "params as a string that is not JSON")
	require.Error(t, json.Unmarshal([]byte(`{"id":1,"attempts":1.5}`), &task), "a fractional attempt count")
	var f Flag
	require.Error(t, json.Unmarshal([]byte(`"yes"`), &f))

	// A row that does not decode is kept by its key fields only when it has an id.
	var rows taskRows
	require.NoError(t, json.Unmarshal([]byte(`[{"id":7,"status":"claimed","priority":{}}]`), &rows))
	require.Equal(t, ID("7"), rows[0].ID)
	require.Error(t, json.Unmarshal([]byte(`[{"status":"claimed","priority":{}}]`), &rows), "a row without an id")

	_, err := listOf(json.RawMessage(`{"tasks":null}`), []string{"tasks"})
	require.Error(t, err, "a list key that holds no list")
	_, err = oneOf(json.RawMessage(`{"items":[[1]]}`))
	require.ErrorContains(t, err, "is not an object")
}

// Only TaskManager's own 500 "Data too long" / "no active
// transaction" end a call; the same words in another JSON shape (a proxy,
// another app behind the same host) are transient.
func TestDecode_foreign_500_with_php_words_is_transient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := foreign(t, 500, "application/json", `{"message":"Data too long for column 'result_json'"}`)
	_, err := c.Complete(ctx, "2", Completion{WorkerID: "w", Success: true, Result: json.RawMessage(`{"a":1}`)})
	requireErr(t, err, ErrTransient, 500)
	c = foreign(t, 500, "application/json", `{"message":"There is no active transaction"}`)
	_, err = c.Claim(ctx, ClaimRequest{WorkerID: "w", TaskTypeID: "1"})
	requireErr(t, err, ErrTransient, 500)
}

func TestTask_HeldBy(t *testing.T) {
	held := Task{Status: StatusClaimed, ClaimedBy: "w1", Attempts: 2}
	require.True(t, held.HeldBy("w1", 2))
	require.False(t, held.HeldBy("w1", 1), "an older claim of the same worker")
	require.False(t, held.HeldBy("w2", 2))
	pending := held
	pending.Status = StatusPending
	require.False(t, pending.HeldBy("w1", 2))
}
