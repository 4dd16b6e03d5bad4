// Command ocibuild packages a root filesystem directory as a one-layer OCI image, with no
// container engine: an OCI image layout directory and the same layout as one tar archive
// (`oci-archive:` to skopeo and podman, a directory for `crane push`).
//
//	ocibuild -rootfs dir -layout out/ -archive out.tar -tag meshop:0.1.0 \
//	  -user 65532:65532 -entrypoint /usr/local/bin/meshop -cmd run -port 8080/tcp -port 9443/tcp \
//	  -label org.opencontainers.image.version=0.1.0 ...
//
// The layer is reproducible: entries sorted, owned by root, timestamps zero.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	rootfs := flag.String("rootfs", "", "root filesystem directory")
	out := flag.String("layout", "", "OCI image layout directory to write (replaced)")
	archive := flag.String("archive", "", "tar archive of the layout to write (optional)")
	tag := flag.String("tag", "", "reference name recorded in the layout, such as meshop:0.1.0")
	user := flag.String("user", "", "user[:group] the image runs as")
	entrypoint := flag.String("entrypoint", "", "entrypoint path")
	var cmd, ports, labels, env list
	flag.Var(&cmd, "cmd", "default argument (repeatable)")
	flag.Var(&ports, "port", "exposed port such as 8080/tcp (repeatable)")
	flag.Var(&labels, "label", "key=value (repeatable)")
	flag.Var(&env, "env", "KEY=value (repeatable)")
	flag.Parse()
	if *rootfs == "" || *out == "" || *entrypoint == "" {
		fail(fmt.Errorf("-rootfs, -layout and -entrypoint are required"))
	}
	layerTar, err := tarDir(*rootfs)
	if err != nil {
		fail(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		fail(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		fail(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		fail(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.User = *user
	cfg.Config.Entrypoint = []string{*entrypoint}
	cfg.Config.Cmd = cmd
	cfg.Config.Env = env
	cfg.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range ports {
		cfg.Config.ExposedPorts[p] = struct{}{}
	}
	cfg.Config.Labels = map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			fail(fmt.Errorf("label %q is not key=value", l))
		}
		cfg.Config.Labels[k] = v
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		fail(err)
	}
	if err := os.RemoveAll(*out); err != nil {
		fail(err)
	}
	p, err := layout.Write(*out, empty.Index)
	if err != nil {
		fail(err)
	}
	var opts []layout.Option
	if *tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": *tag}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		fail(err)
	}
	if *archive != "" {
		data, err := tarDir(*out)
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(*archive, data, 0o644); err != nil {
			fail(err)
		}
	}
	digest, _ := img.Digest()
	size, _ := layer.Size()
	fmt.Printf("%s layer %d bytes compressed\n", digest, size)
}

// tarDir writes dir as a tar stream with stable order, owner and times.
func tarDir(dir string) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, path := range paths {
		info, err := os.Lstat(path)
		if err != nil {
			return nil, err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return nil, err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = time.Unix(0, 0), time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ocibuild:", err)
	os.Exit(1)
}
