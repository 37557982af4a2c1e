package taskmanager

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPHPResult_reads_back_as_PHP_stores_it(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{}`:                            ``,
		`null`:                          ``,
		`[]`:                            ``,
		`{"a":{}}`:                      `{"a":[]}`,
		`{"0":"x","1":"y"}`:             `["x","y"]`,
		`{"1":"x","0":"y"}`:             `{"1":"x","0":"y"}`,
		`{"b":1,"a":"</x> é"}`:          `{"b":1,"a":"</x> é"}`,
		`{"n":12345678901234567890}`:    `{"n":12345678901234567890}`,
		`{"a":[{"0":1}],"a2":{"k":{}}}`: `{"a":[[1]],"a2":{"k":[]}}`,
	} {
		got, err := PHPResult(json.RawMessage(in))
		require.NoError(t, err, in)
		require.Equal(t, want, string(got), in)
	}
}

func TestSameResult_compares_as_stored(t *testing.T) {
	t.Parallel()
	require.True(t, SameResult(json.RawMessage(`{}`), nil))
	require.True(t, SameResult(json.RawMessage(`{"a":{}}`), json.RawMessage(`{"a":[]}`)))
	require.True(t, SameResult(json.RawMessage(`{"0":"x"}`), json.RawMessage(`["x"]`)))
	require.True(t, SameResult(json.RawMessage(`{"a":1.0,"b":2}`), json.RawMessage(`{"b":2,"a":1}`)))
	require.False(t, SameResult(json.RawMessage(`{"a":1}`), json.RawMessage(`{"a":2}`)))
	require.False(t, SameResult(json.RawMessage(`{"a":1}`), json.RawMessage(`{"a":1,"b":null}`)))
	require.False(t, SameResult(json.RawMessage(`{"a":`), json.RawMessage(`{"a":1}`)))
}
