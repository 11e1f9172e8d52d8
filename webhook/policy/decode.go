package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Kinds of workloads the generator accepts.
const (
	KindPod                   = "Pod"
	KindDeployment            = "Deployment"
	KindReplicaSet            = "ReplicaSet"
	KindStatefulSet           = "StatefulSet"
	KindDaemonSet             = "DaemonSet"
	KindJob                   = "Job"
	KindCronJob               = "CronJob"
	KindReplicationController = "ReplicationController"
)

// Workload is one decoded object that produces pods.
type Workload struct {
	Kind string
	Name string
	// Namespace is the object's metadata.namespace. The policy binds it; a
	// caller with a default namespace (contrast generate -n) sets it where
	// the document names none. Empty: the policy accepts any namespace,
	// and its hash differs from the one the webhook computes for the
	// admitted pod, which binds the namespace it is admitted in.
	Namespace string
	// Template is the pod template (for a Pod: its metadata and spec).
	Template corev1.PodTemplateSpec
	// Object is the typed object (*corev1.Pod, *appsv1.Deployment, ...).
	Object any
	// EnvSources are the ConfigMaps the pod template may reference with
	// envFrom. DecodeWorkloads sets it to the ConfigMaps of the same
	// input in the workload's namespace (or without one); a caller that
	// reads several inputs sets it from all of them (see DecodeEnvSources).
	EnvSources *EnvSources
}

// EnvSources holds the ConfigMaps that containers reference with envFrom,
// by name, as they are at admission (webhook: read through the API server)
// or as the input documents define them (YAML side, as Kata genpolicy reads
// its config-map inputs). Generation pins the keys and values they bring;
// a later change of a ConfigMap makes the pod's containers fail to start.
type EnvSources struct {
	ConfigMaps map[string]*corev1.ConfigMap
}

// DecodeEnvSources returns the ConfigMaps of a multi-document YAML or JSON
// stream (Lists expanded) that are in namespace or name none.
func DecodeEnvSources(data []byte, namespace string) (*EnvSources, error) {
	cms, err := decodeConfigMaps(data)
	if err != nil {
		return nil, err
	}
	return envSourcesIn(cms, namespace), nil
}

func envSourcesIn(cms []*corev1.ConfigMap, namespace string) *EnvSources {
	s := &EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{}}
	for _, cm := range cms {
		if cm.Namespace == "" || cm.Namespace == namespace {
			s.ConfigMaps[cm.Name] = cm
		}
	}
	return s
}

func decodeConfigMaps(data []byte) ([]*corev1.ConfigMap, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
	var out []*corev1.ConfigMap
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading document %d: %w", i, err)
		}
		if len(doc) > maxDocumentSize {
			return nil, fmt.Errorf("document %d: larger than %d bytes", i, maxDocumentSize)
		}
		cms, err := configMapsOf(doc, 0)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, cms...)
	}
}

func configMapsOf(doc []byte, depth int) ([]*corev1.ConfigMap, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, nil
	}
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("decoding type: %w", err)
	}
	switch {
	case tm.Kind == "ConfigMap" && tm.APIVersion == "v1":
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict(doc, &cm); err != nil {
			return nil, fmt.Errorf("decoding ConfigMap: %w", err)
		}
		return []*corev1.ConfigMap{&cm}, nil
	case depth == 0 && (tm.Kind == "List" || (len(tm.Kind) > 4 && tm.Kind[len(tm.Kind)-4:] == "List" && tm.Items != nil)):
		var out []*corev1.ConfigMap
		for i, item := range tm.Items {
			cms, err := configMapsOf(item, depth+1)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out = append(out, cms...)
		}
		return out, nil
	}
	return nil, nil
}

// maxDocumentSize bounds one YAML document.
const maxDocumentSize = 4 << 20

func decodeWorkloads(data []byte) ([]Workload, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
	var out []Workload
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading document %d: %w", i, err)
		}
		if len(doc) > maxDocumentSize {
			return nil, fmt.Errorf("document %d: larger than %d bytes", i, maxDocumentSize)
		}
		ws, err := decodeDocument(doc, 0)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, ws...)
	}
}

// DecodeWorkloads decodes a multi-document YAML or JSON stream and returns the
// workloads in it, in order, each with the ConfigMaps of the stream in its
// namespace as EnvSources. Objects of other kinds (Services, ConfigMaps,
// ...) are skipped; a List is expanded.
func DecodeWorkloads(data []byte) ([]Workload, error) {
	ws, err := decodeWorkloads(data)
	if err != nil {
		return nil, err
	}
	cms, err := decodeConfigMaps(data)
	if err != nil {
		return nil, err
	}
	for i := range ws {
		ws[i].EnvSources = envSourcesIn(cms, ws[i].Namespace)
	}
	return ws, nil
}

type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json2RawMessage `json:"items"`
}

// json2RawMessage keeps a list item undecoded.
type json2RawMessage = yamlRaw

type yamlRaw []byte

func (r *yamlRaw) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

func decodeDocument(doc []byte, depth int) ([]Workload, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, nil
	}
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("decoding type: %w", err)
	}
	if tm.Kind == "" {
		// comments-only documents decode to null
		var v any
		if err := yaml.Unmarshal(doc, &v); err == nil && v == nil {
			return nil, nil
		}
		return nil, errors.New("object has no kind")
	}
	if tm.Kind == "List" || (len(tm.Kind) > 4 && tm.Kind[len(tm.Kind)-4:] == "List" && tm.Items != nil) {
		if depth > 0 {
			return nil, errors.New("nested list")
		}
		var out []Workload
		for i, item := range tm.Items {
			ws, err := decodeDocument(item, depth+1)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out = append(out, ws...)
		}
		return out, nil
	}
	w, ok, err := decodeObject(tm.APIVersion, tm.Kind, doc)
	if err != nil || !ok {
		return nil, err
	}
	return []Workload{w}, nil
}

func decodeObject(apiVersion, kind string, doc []byte) (Workload, bool, error) {
	var w Workload
	// As kubectl sends it: YAML to JSON by the YAML's own types (8080 and
	// -4 are numbers, whatever field they are in), then decoded strictly
	// into the API type. sigs.k8s.io/yaml's UnmarshalStrict would convert
	// by the target's field types and accept `command: [-4]`, which the API
	// server refuses: a policy for an object that cannot be applied.
	strict := func(v any) error {
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return fmt.Errorf("decoding %s: %w", kind, err)
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("decoding %s: %w", kind, err)
		}
		return nil
	}
	switch {
	case kind == KindPod && apiVersion == "v1":
		var o corev1.Pod
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}}
		w.Name = o.Name
		if w.Name == "" {
			w.Name = o.GenerateName
		}
		w.Namespace = o.Namespace
	case kind == KindReplicationController && apiVersion == "v1":
		var o corev1.ReplicationController
		if err := strict(&o); err != nil {
			return w, false, err
		}
		if o.Spec.Template == nil {
			return w, false, errors.New("replication controller without template")
		}
		w = Workload{Object: &o, Template: *o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindDeployment && apiVersion == "apps/v1":
		var o appsv1.Deployment
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindReplicaSet && apiVersion == "apps/v1":
		var o appsv1.ReplicaSet
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindStatefulSet && apiVersion == "apps/v1":
		var o appsv1.StatefulSet
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindDaemonSet && apiVersion == "apps/v1":
		var o appsv1.DaemonSet
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindJob && apiVersion == "batch/v1":
		var o batchv1.Job
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	case kind == KindCronJob && apiVersion == "batch/v1":
		var o batchv1.CronJob
		if err := strict(&o); err != nil {
			return w, false, err
		}
		w = Workload{Object: &o, Template: o.Spec.JobTemplate.Spec.Template, Name: o.Name, Namespace: o.Namespace}
	default:
		return w, false, nil
	}
	w.Kind = kind
	if w.Name == "" {
		return w, false, fmt.Errorf("%s has no name", kind)
	}
	return w, true, nil
}
