// Package activities holds the handlers that run TaskManager tasks and the
// Temporal activities around them.
//
// A handler author needs: NewRegistry, Register (or Registry.Add with
// Typed, Exec, HTTP), Permanent, Transient and InvalidParams (errors that
// decide retries), ReportProgress, and TaskInfo (the HandlerInput a
// handler runs for):
//
//	reg := activities.NewRegistry()
//	activities.Register(reg, "image.resize", func(ctx context.Context, p ResizeParams) (ResizeResult, error) {
//		activities.ReportProgress(ctx, 50, "resizing")
//		return resize(ctx, p)
//	})
//
// The worker side is Activities (RegisterOn, ReportOutcome, PostProgress)
// and Report: the bridge uses them; a handler author does not.
package activities
