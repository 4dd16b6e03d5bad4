// Command argocd prints the health Argo CD gives one object read as JSON from stdin, by running
// the health check shipped in an argocd-cm ConfigMap file with gopher-lua, the interpreter Argo
// CD embeds, the way Argo CD calls a user-defined script (its util/lua package, whose module does
// not build here):
//   - the script is the value of `resource.customizations.health.<group>_<Kind>`;
//   - only the base, package and table libraries are open (Argo CD opens the standard library
//     only for its built-in scripts; it also opens a reduced `os`, which meshop's script does not
//     use), so `string.*` is not available to the script;
//   - the object is the global `obj`, a Lua table converted from the JSON object (numbers become
//     Lua numbers, arrays 1-based tables, null nil);
//   - the script runs under a 1 s deadline and must return a table; the table is read as
//     {status, message}, and a status outside Healthy, Progressing, Degraded, Suspended,
//     Missing, Unknown becomes Unknown.
//
//	argocd deploy/gitops/argocd-cm.yaml < meshinstall.json   # {"status":"Healthy","message":"..."}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

const key = "resource.customizations.health.meshop.dev_MeshInstall"

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: argocd <argocd-cm ConfigMap file> < object.json"))
	}
	script, err := healthScript(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		fail(fmt.Errorf("stdin is not a JSON object: %w", err))
	}
	status, message, err := run(script, obj)
	if err != nil {
		fail(err)
	}
	line, _ := json.Marshal(map[string]string{"status": status, "message": message})
	fmt.Println(string(line))
}

func healthScript(path string) (string, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(text, &cm); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	script := cm.Data[key]
	if cm.Kind != "ConfigMap" || script == "" {
		return "", fmt.Errorf("%s: no ConfigMap with data key %s", path, key)
	}
	return script, nil
}

func run(script string, obj map[string]any) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", fmt.Errorf("script failed: %w", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", L.Get(-1).Type())
	}
	status, _ := ret.RawGetString("status").(lua.LString)
	message, _ := ret.RawGetString("message").(lua.LString)
	switch string(status) {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return string(status), string(message), nil
	}
	return "Unknown", "Lua returned an invalid health status", nil
}

// toLua converts decoded JSON into Lua values.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "argocd:", err)
	os.Exit(1)
}
