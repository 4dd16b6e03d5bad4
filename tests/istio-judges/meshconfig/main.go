// meshconfig: Istio's own code on Istio's MeshConfig, for meshop's tests.
//
//	meshconfig table   prints the fields of MeshConfig and of every message reachable from it
//	                   (JSON names, kinds, enums, oneofs), read from the proto descriptors
//	                   compiled into istio.io/api; meshop's validator is generated from it.
//	meshconfig judge   reads a JSON array of mesh configs (objects) on stdin and prints one
//	                   verdict per config: what istiod does with it (mesh.ApplyMeshConfigDefaults,
//	                   which decodes it onto Istio's defaults and runs agent.ValidateMeshConfig),
//	                   and whether the strict decoder (unknown fields refused) accepts it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/validation/agent"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/util/protomarshal"
)

type field struct {
	Kind     string `json:"kind"`
	Repeated bool   `json:"repeated,omitempty"`
	Map      bool   `json:"map,omitempty"`
	MapKey   string `json:"mapKey,omitempty"`
	Message  string `json:"message,omitempty"`
	Enum     string `json:"enum,omitempty"`
	Oneof    string `json:"oneof,omitempty"`
	Proto    string `json:"proto"`
}

type table struct {
	Root     string                      `json:"root"`
	Messages map[string]map[string]field `json:"messages"`
	Enums    map[string][]string         `json:"enums"`
}

// Well-known types meshop's validator knows by name: their insides are not listed.
var wellKnown = map[string]bool{
	"google.protobuf.Duration": true, "google.protobuf.Struct": true, "google.protobuf.Value": true,
	"google.protobuf.ListValue": true, "google.protobuf.Any": true, "google.protobuf.Empty": true,
	"google.protobuf.Timestamp": true, "google.protobuf.BoolValue": true, "google.protobuf.StringValue": true,
	"google.protobuf.Int32Value": true, "google.protobuf.UInt32Value": true, "google.protobuf.Int64Value": true,
	"google.protobuf.UInt64Value": true, "google.protobuf.DoubleValue": true, "google.protobuf.FloatValue": true,
	"google.protobuf.BytesValue": true,
}

func kindOf(fd protoreflect.FieldDescriptor, t *table, queue *[]protoreflect.MessageDescriptor) field {
	f := field{Kind: fd.Kind().String(), Proto: string(fd.Name())}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		f.Kind = "message"
		f.Message = string(md.FullName())
		if !wellKnown[f.Message] {
			*queue = append(*queue, md)
		}
	case protoreflect.EnumKind:
		ed := fd.Enum()
		f.Enum = string(ed.FullName())
		if _, ok := t.Enums[f.Enum]; !ok {
			var names []string
			for i := 0; i < ed.Values().Len(); i++ {
				names = append(names, string(ed.Values().Get(i).Name()))
			}
			t.Enums[f.Enum] = names
		}
	}
	return f
}

func dumpTable() error {
	root := (&meshconfig.MeshConfig{}).ProtoReflect().Descriptor()
	t := &table{Root: string(root.FullName()), Messages: map[string]map[string]field{}, Enums: map[string][]string{}}
	queue := []protoreflect.MessageDescriptor{root}
	for len(queue) > 0 {
		md := queue[0]
		queue = queue[1:]
		name := string(md.FullName())
		if _, done := t.Messages[name]; done {
			continue
		}
		fields := map[string]field{}
		t.Messages[name] = fields
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			var f field
			if fd.IsMap() {
				f = kindOf(fd.MapValue(), t, &queue)
				f.Map = true
				f.MapKey = fd.MapKey().Kind().String()
			} else {
				f = kindOf(fd, t, &queue)
				f.Repeated = fd.IsList()
			}
			f.Proto = string(fd.Name())
			if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
				f.Oneof = string(o.Name())
			}
			fields[fd.JSONName()] = f
		}
	}
	out, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

type verdict struct {
	// Error is what istiod reports when it loads the config (it then refuses to start or keeps
	// its previous mesh config).
	Error string `json:"error,omitempty"`
	// Strict is what the strict decoder reports (unknown fields), which istiod itself ignores.
	Strict string `json:"strict,omitempty"`
	// Warning is what agent.ValidateMeshConfig warns about.
	Warning string `json:"warning,omitempty"`
	// Providers is what istiod logs about invalid extension providers (it keeps running and
	// drops them when they are used).
	Providers string `json:"providers,omitempty"`
}

func judge() error {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var configs []json.RawMessage
	if err := json.Unmarshal(in, &configs); err != nil {
		return err
	}
	// istiod only logs invalid extension providers: catch its log lines.
	logFile, err := os.CreateTemp("", "meshconfig-judge-*.log")
	if err != nil {
		return err
	}
	defer os.Remove(logFile.Name())
	opts := log.DefaultOptions()
	opts.OutputPaths = []string{logFile.Name()}
	opts.ErrorOutputPaths = []string{"stderr"}
	opts.JSONEncoding = true
	if err := log.Configure(opts); err != nil {
		return err
	}
	var out []verdict
	for _, c := range configs {
		if err := os.Truncate(logFile.Name(), 0); err != nil {
			return err
		}
		var v verdict
		text, err := yaml.JSONToYAML(c)
		if err != nil {
			return err
		}
		if err := protomarshal.ApplyJSONStrict(string(c), &meshconfig.MeshConfig{}); err != nil {
			v.Strict = err.Error()
		}
		m, err := mesh.ApplyMeshConfigDefaults(string(text))
		if err != nil {
			v.Error = err.Error()
		} else if warn, _ := agent.ValidateMeshConfig(m); warn != nil {
			v.Warning = warn.Error()
		}
		_ = log.Sync()
		logged, err := os.ReadFile(logFile.Name())
		if err != nil {
			return err
		}
		var providers []string
		for _, line := range strings.Split(string(logged), "\n") {
			var entry struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && strings.Contains(entry.Msg, "invalid extension provider") {
				providers = append(providers, entry.Msg)
			}
		}
		if len(providers) > 0 {
			v.Providers = providers[0]
		}
		out = append(out, v)
	}
	enc, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(enc))
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "table":
		err = dumpTable()
	case len(os.Args) == 2 && os.Args[1] == "judge":
		err = judge()
	default:
		err = fmt.Errorf("usage: meshconfig table|judge")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
