package taskmanager_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

// Every failure is an *Error, the params that do not encode included
// (before, a plain error): a validation error, not retried.
func TestCreateTask_params_that_do_not_encode_are_a_validation_error(t *testing.T) {
	c, err := taskmanager.New(taskmanager.Options{BaseURL: "http://127.0.0.1:1/api", APIKey: "k"})
	require.NoError(t, err)
	_, err = c.CreateTask(context.Background(), "example.echo", map[string]any{"f": func() {}})
	var e *taskmanager.Error
	require.True(t, errors.As(err, &e), "%T %v", err, err)
	require.ErrorIs(t, err, taskmanager.ErrValidation)
	require.False(t, taskmanager.Retryable(err))
	require.ErrorContains(t, err, "params do not encode as JSON")
}
