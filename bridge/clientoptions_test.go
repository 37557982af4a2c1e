package bridge

import "testing"

// ClientOptions with a nil logger logs to slog.Default(), as New does.
func TestClientOptions_nil_logger_is_the_default(t *testing.T) {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("ClientOptions(cfg, nil, nil) panicked: %v", r)
		}
	}()
	_, _ = ClientOptions(Config{WorkerID: "w"}, nil, nil)
}
