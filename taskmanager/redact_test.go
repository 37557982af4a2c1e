package taskmanager_test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://hooks.example/x?token=SECRET":    "https://hooks.example/x",
		"http://alice:pw@127.0.0.1:8000/api#frag": "http://127.0.0.1:8000/api",
		"http://alice@127.0.0.1:8000/api?":        "http://127.0.0.1:8000/api",
		"http://localhost:8000/api":               "http://localhost:8000/api",
		"http://alice:pw@h/a%zz?token=SECRET":     "http://h/a%zz", // does not parse: cut as text
		"  https://h/p?q=1  ":                     "https://h/p",
		"/relative/path?token=SECRET":             "/relative/path",
	} {
		require.Equal(t, want, taskmanager.RedactURL(in), in)
	}
}

func TestRedactURLError(t *testing.T) {
	t.Parallel()
	raw := "http://alice:pw@h/x?token=SECRET"
	err := taskmanager.RedactURLError(&url.Error{Op: "Post", URL: raw, Err: context.DeadlineExceeded})
	require.Equal(t, `Post "http://h/x": context deadline exceeded`, err.Error())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ue *url.Error
	require.True(t, errors.As(err, &ue))
	require.True(t, ue.Timeout())

	// A cause whose text holds a URL (a Location that does not parse) is
	// scrubbed, and still matches what it matched.
	cause := errors.Join(errors.New(`failed to parse Location header "/next%zz?token=SECRET": invalid URL escape "%zz"`), context.Canceled)
	err = taskmanager.RedactURLError(&url.Error{Op: "Post", URL: raw, Err: cause})
	require.NotContains(t, chainText(err), "SECRET")
	require.Contains(t, err.Error(), `"/next%zz"`)
	require.ErrorIs(t, err, context.Canceled)

	plain := errors.New("plain")
	require.Equal(t, plain, taskmanager.RedactURLError(plain))
	require.Nil(t, taskmanager.RedactURLError(nil))
}

func TestRedactURL_without_a_scheme_drops_the_userinfo(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"admin:s3cret@tm.example/api":       "tm.example/api",
		"admin:s3cret@tm.example/api?k=v#f": "tm.example/api",
		"tm.example:8000/api?key=x":         "tm.example:8000/api",
		"localhost":                         "localhost",
	} {
		require.Equal(t, want, taskmanager.RedactURL(in), in)
	}
}
