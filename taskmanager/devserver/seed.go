package devserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/prismq/tmbridge/taskmanager"
)

// ExampleType is a task type of the reference worker's examples, with the
// JSON Schema its params follow and a way to make distinct params.
type ExampleType struct {
	Name   string
	Schema string
	Params func(i int) map[string]any
}

// ExampleTypes are the reference worker's example types, plus
// demo.pipeline (a multi-step type defined in the bridge's config).
func ExampleTypes() []ExampleType {
	return []ExampleType{
		{"example.echo", `{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}`,
			func(i int) map[string]any { return map[string]any{"message": fmt.Sprintf("Hello #%d", i)} }},
		{"example.uppercase", `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`,
			func(i int) map[string]any { return map[string]any{"text": fmt.Sprintf("make me loud %d", i)} }},
		{"example.math.add", `{"type":"object","properties":{"a":{"type":["number","string"]},"b":{"type":["number","string"]}},"required":["a","b"]}`,
			func(i int) map[string]any { return map[string]any{"a": i, "b": 0.5} }},
		{"example.sleep", `{"type":"object","properties":{"duration":{"type":"number","minimum":0}}}`,
			func(i int) map[string]any { return map[string]any{"duration": 1 + i%3, "n": i} }},
		{"example.error", `{"type":"object","properties":{"message":{"type":"string"}}}`,
			func(i int) map[string]any { return map[string]any{"message": fmt.Sprintf("Simulated error #%d", i)} }},
		{"demo.pipeline", `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`,
			func(i int) map[string]any { return map[string]any{"text": fmt.Sprintf("pipeline run %d", i)} }},
	}
}

// Seed registers the example types through the API and creates perType
// tasks of each. It returns the ids of the tasks by type.
func Seed(ctx context.Context, c *taskmanager.Client, perType int) (map[string][]taskmanager.ID, error) {
	out := map[string][]taskmanager.ID{}
	for _, et := range ExampleTypes() {
		if _, err := c.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: et.Name, Version: "1.0.0", ParamSchema: json.RawMessage(et.Schema)}); err != nil {
			return nil, err
		}
		for i := range perType {
			cr, err := c.CreateTask(ctx, et.Name, et.Params(i))
			if err != nil {
				return nil, err
			}
			out[et.Name] = append(out[et.Name], cr.ID)
		}
	}
	return out, nil
}
