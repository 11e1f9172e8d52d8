package policy

import (
	"errors"
	"fmt"
	"strconv"
)

// Error kinds callers can branch on.
var (
	// ErrUnsupported is returned for pod features the policy cannot secure.
	ErrUnsupported = errors.New("unsupported pod feature")
	// ErrInvalidInput is returned for malformed input.
	ErrInvalidInput = errors.New("invalid input")
)

// FieldError is a generation error caused by one field of the pod. Generate
// returns one for every refused or malformed pod field and for images that
// cannot be resolved; errors.Is and errors.As see through it to Err.
type FieldError struct {
	// Field is the path of the offending field in the pod passed to
	// Generate (for a workload: in its pod template), with the indices of
	// that input, e.g. spec.volumes[2].hostPath,
	// spec.containers[0].env[3].valueFrom or spec.initContainers[1].image.
	Field string
	// Reason explains what is wrong with the field. It names fields,
	// variables, volumes and images, never values of environment
	// variables, arguments or other data of the pod.
	Reason string
	// Err is ErrUnsupported, ErrInvalidInput, or the error of the image
	// source (an *images.Error for images that cannot be resolved).
	Err error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail() }

// Detail is the message without the field path.
func (e *FieldError) Detail() string {
	if e.Reason == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Reason
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, kind error, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Err: kind}
}

// index appends [i] to a field path.
func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// longLineError is returned by RenderRego for a policy line the in-guest
// engine would not accept. value is the JSON string on that line, if any:
// Generate uses it to find the field the line came from.
type longLineError struct {
	line, length int
	value        string
}

func (e *longLineError) Error() string {
	return fmt.Sprintf("%v: policy line %d is %d characters long (limit %d)", ErrUnsupported, e.line, e.length, MaxLineLength)
}

func (e *longLineError) Unwrap() error { return ErrUnsupported }
