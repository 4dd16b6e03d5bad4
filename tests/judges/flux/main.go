// Command flux prints how Flux's kustomize-controller judges one object read as JSON from stdin:
// with the `healthCheckExprs` of a Flux Kustomization file (evaluated by Flux's own CEL status
// evaluator, github.com/fluxcd/pkg/runtime/cel) and with `wait: true` alone (Flux's kstatus fork,
// github.com/fluxcd/cli-utils).
//
//	flux deploy/gitops/flux-kustomization.yaml < meshinstall.json
//	# {"cel":"Current","wait":"Current","message":"..."}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The part of a Flux Kustomization this judge reads.
type kustomization struct {
	Kind string `json:"kind"`
	Spec struct {
		HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
	} `json:"spec"`
}

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: flux <file with a Flux Kustomization> < object.json"))
	}
	exprs, err := healthCheck(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail(fmt.Errorf("stdin is not a Kubernetes object: %w", err))
	}
	out := map[string]string{}
	evaluator, err := cel.NewStatusEvaluator(exprs)
	if err != nil {
		fail(err)
	}
	if res, err := evaluator.Evaluate(context.Background(), &obj); err != nil {
		// Flux's status reader turns an evaluation error into Unknown (with the error) and keeps
		// waiting (fluxcd/cli-utils statusreaders, errResourceToResourceStatus).
		out["cel"] = "Unknown"
		out["message"] = err.Error()
	} else {
		out["cel"] = res.Status.String()
	}
	res, err := status.Compute(&obj)
	if err != nil {
		fail(err)
	}
	out["wait"] = res.Status.String()
	if out["message"] == "" {
		out["message"] = res.Message
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}

// healthCheck finds the expressions for meshop.dev MeshInstall in the file's Kustomization(s).
func healthCheck(path string) (*kustomize.HealthCheckExpressions, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, doc := range strings.Split(string(text), "\n---") {
		var k kustomization
		if err := yaml.Unmarshal([]byte(doc), &k); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if k.Kind != "Kustomization" {
			continue
		}
		for i := range k.Spec.HealthCheckExprs {
			check := &k.Spec.HealthCheckExprs[i]
			if strings.HasPrefix(check.APIVersion, "meshop.dev/") && check.Kind == "MeshInstall" {
				return &check.HealthCheckExpressions, nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no Kustomization with healthCheckExprs for meshop.dev MeshInstall", path)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "flux:", err)
	os.Exit(1)
}
