package activities_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// PHP decodes a task's params into arrays and writes an empty object back
// as []: a handler whose params want an object there (a map, a struct,
// nested or behind a pointer) reads it as an empty one. An empty list
// stays a list where the handler wants one. Before, such a task failed
// for good on the PHP deployment ("cannot use JSON array as map") while
// it ran on the dev server. (Found by a review.)
func TestTyped_reads_PHPs_empty_list_as_an_empty_object(t *testing.T) {
	t.Parallel()
	type inner struct {
		X int `json:"x"`
	}
	type params struct {
		Opts map[string]any `json:"opts"`
		In   inner          `json:"in"`
		PIn  *inner         `json:"pin"`
		Deep struct {
			M map[string]int `json:"m"`
		} `json:"deep"`
		Tags []string `json:"tags"`
		Any  any      `json:"any"`
		N    int      `json:"n"`
	}
	var got params
	h := activities.Typed(func(ctx context.Context, p params) (map[string]any, error) {
		got = p
		return map[string]any{}, nil
	})
	_, err := h.Handle(context.Background(), json.RawMessage(`{"opts":[],"in":[],"pin":[],"deep":{"m":[]},"tags":[],"any":[],"n":3}`))
	require.NoError(t, err)
	require.NotNil(t, got.Opts)
	require.Empty(t, got.Opts)
	require.NotNil(t, got.PIn)
	require.Equal(t, []string{}, got.Tags)
	require.Equal(t, []any{}, got.Any)
	require.Equal(t, 3, got.N)

	_, err = h.Handle(context.Background(), json.RawMessage(`{"opts":[1]}`))
	require.True(t, activities.HasErrorType(err, activities.ErrTypeInvalidParams), "a list that is not empty is not an object: %v", err)
	require.ErrorContains(t, err, `field "opts"`)
}

// The shapes PHP gives most: objects in a list, in a map, an embedded
// struct's field, a key in another case. Keys keep their order (a
// case-insensitive match takes the last one). Found by a review of the
// first fix, which patched by the error's field path and missed these.
func TestTyped_reads_PHPs_empty_list_as_an_empty_object_in_every_shape(t *testing.T) {
	t.Parallel()
	type item struct {
		M map[string]int `json:"m"`
	}
	type Base struct {
		Opts map[string]any `json:"opts"`
	}
	type params struct {
		Base
		Items []item          `json:"items"`
		ByKey map[string]item `json:"by_key"`
		Named struct {
			X int `json:"x"`
		} `json:"named"`
		N int `json:"n"`
	}
	var got params
	h := activities.Typed(func(ctx context.Context, p params) (map[string]any, error) {
		got = p
		return map[string]any{}, nil
	})
	_, err := h.Handle(context.Background(), json.RawMessage(`{"opts":[],"items":[{"m":[]},{"m":{"a":1}}],"by_key":{"k":{"m":[]}},"NAMED":[],"n":1,"N":2}`))
	require.NoError(t, err)
	require.NotNil(t, got.Opts)
	require.Len(t, got.Items, 2)
	require.NotNil(t, got.Items[0].M)
	require.Equal(t, 1, got.Items[1].M["a"])
	require.NotNil(t, got.ByKey["k"].M)
	require.Equal(t, 2, got.N, "the last of the keys that match, as without a fix")
}

// point reads itself from a list: [] is its own affair, not an empty object.
type point struct{ n int }

func (p *point) UnmarshalJSON(b []byte) error {
	var xs []int
	if err := json.Unmarshal(b, &xs); err != nil {
		return err
	}
	p.n = len(xs)
	return nil
}

// A type that decodes itself gets its [] as it is.
func TestTyped_leaves_the_lists_of_types_that_decode_themselves(t *testing.T) {
	t.Parallel()
	type params struct {
		P point `json:"p"`
	}
	h := activities.Typed(func(ctx context.Context, p params) (map[string]int, error) {
		return map[string]int{"n": p.P.n}, nil
	})
	out, err := h.Handle(context.Background(), json.RawMessage(`{"p":[]}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"n":0}`, string(out))
}
