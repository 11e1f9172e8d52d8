package policy

import (
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podIdentity is what the generator knows about the pod's name before the pod
// exists. Both the YAML side and the admitted pod map to the same identity.
type podIdentity struct {
	// nameRegex matches the pod name.
	nameRegex string
}

const (
	maxNameLength          = 63
	randomSuffixLength     = 5
	maxGeneratedNameLength = maxNameLength - randomSuffixLength
	// suffix alphabet of utilrand.String: bcdfghjklmnpqrstvwxz2456789
	randomChars = "[bcdfghjklmnpqrstvwxz2456789]"
	// pod-template-hash / controller-revision hashes use the same alphabet
	// with up to 10 characters.
	hashChars = "[bcdfghjklmnpqrstvwxz2456789]{1,10}"
)

// generatedName is the regex for names made by the API server from
// generateName prefix (a random suffix of five characters, prefix truncated).
func generatedName(prefix string) string {
	if len(prefix) > maxGeneratedNameLength {
		prefix = prefix[:maxGeneratedNameLength]
	}
	return regexp.QuoteMeta(prefix) + randomChars + "{5}"
}

// cronJobScheduledRe matches job names created by the CronJob controller
// (<cronjob>-<scheduled time in minutes>).
var cronJobScheduledRe = regexp.MustCompile(`^(.+)-([0-9]{8,})$`)

// cronJobBase returns the CronJob name of a Job that the CronJob controller
// created. A Job named like that is treated as such on both sides, so the
// identities still agree.
func cronJobBase(job string) (string, bool) {
	if m := cronJobScheduledRe.FindStringSubmatch(job); m != nil {
		return m[1], true
	}
	return "", false
}

// effectiveKind is the kind whose pattern identityForWorkload uses.
func effectiveKind(kind, name string) string {
	if _, ok := cronJobBase(name); ok && kind == KindJob {
		return KindCronJob
	}
	return kind
}

// identityForWorkload derives the pod name pattern from a workload object.
func identityForWorkload(kind, name string, meta *podMeta) podIdentity {
	switch kind {
	case KindPod:
		if meta.name != "" {
			return podIdentity{nameRegex: "^" + regexp.QuoteMeta(meta.name) + "$"}
		}
		return podIdentity{nameRegex: "^" + generatedName(meta.generateName) + "$"}
	case KindDeployment:
		// <deployment>-<pod-template-hash>-<random>; the ReplicaSet name is
		// not truncated by the controller but the generateName is.
		return podIdentity{nameRegex: "^" + deploymentPodName(name) + "$"}
	case KindStatefulSet:
		return podIdentity{nameRegex: "^" + regexp.QuoteMeta(name) + "-(0|[1-9][0-9]*)$"}
	case KindJob:
		if base, ok := cronJobBase(name); ok {
			return identityForWorkload(KindCronJob, base, meta)
		}
		return podIdentity{nameRegex: "^" + jobPodName(regexp.QuoteMeta(name)) + "$"}
	case KindCronJob:
		return podIdentity{nameRegex: "^" + jobPodName(regexp.QuoteMeta(name)+"-[0-9]{8,}") + "$"}
	default: // ReplicaSet, ReplicationController, DaemonSet
		return podIdentity{nameRegex: "^" + generatedName(name+"-") + "$"}
	}
}

// deploymentPodName matches pods of a Deployment's ReplicaSets.
func deploymentPodName(name string) string {
	// The ReplicaSet is <name>-<hash>; pods are generateName "<rs>-" truncated
	// to 58 characters plus 5 random characters. Long names are rare; accept
	// any truncation for them.
	rs := regexp.QuoteMeta(name) + "-" + hashChars + "-"
	if len(name)+1+10+1 > maxGeneratedNameLength {
		return "[a-z0-9.-]{1," + itoa(maxGeneratedNameLength) + "}" + randomChars + "{5}"
	}
	return rs + randomChars + "{5}"
}

// jobPodName matches the pods of a Job called job (a regex): <job>-<random>
// or, for indexed jobs, <job>-<index>-<random>.
func jobPodName(job string) string {
	return job + "(-(0|[1-9][0-9]*))?-" + randomChars + "{5}"
}

// identityForPod derives the identity of an admitted pod from its owner
// references and the labels the controllers set, so that it equals the
// identity of the workload the pod was created from.
func identityForPod(pod *corev1.Pod) (podIdentity, string) {
	meta := &podMeta{name: pod.Name, generateName: pod.GenerateName}
	var owner *ownerRef
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			owner = &ownerRef{kind: o.Kind, name: o.Name}
		}
	}
	if owner == nil || pod.GenerateName == "" && owner.kind != KindStatefulSet {
		if pod.GenerateName != "" {
			// the name the API server generated is not the identity
			meta.name = ""
		}
		return identityForWorkload(KindPod, pod.Name, meta), KindPod
	}
	switch owner.kind {
	case KindReplicaSet:
		if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(owner.name, "-"+hash) {
			return identityForWorkload(KindDeployment, strings.TrimSuffix(owner.name, "-"+hash), meta), KindDeployment
		}
		return identityForWorkload(KindReplicaSet, owner.name, meta), KindReplicaSet
	case KindStatefulSet, KindDaemonSet, KindJob, KindReplicationController:
		return identityForWorkload(owner.kind, owner.name, meta), effectiveKind(owner.kind, owner.name)
	default:
		meta.name = ""
		return identityForWorkload(KindPod, "", meta), KindPod
	}
}

type ownerRef struct{ kind, name string }

type podMeta struct {
	name, generateName string
}

// controllerLabels are labels that controllers or the API server add to pods;
// they are not part of the workload's identity.
var controllerLabels = []string{
	"pod-template-hash",
	"controller-revision-hash",
	"pod-template-generation",
	"statefulset.kubernetes.io/pod-name",
	"apps.kubernetes.io/pod-index",
	"controller-uid",
	"job-name",
	"batch.kubernetes.io/controller-uid",
	"batch.kubernetes.io/job-name",
	"batch.kubernetes.io/job-completion-index",
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
