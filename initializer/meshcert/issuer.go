package meshcert

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/initializer/initenv"
)

// NewIssuer returns the issuer of the pod's own evidence for the platform
// of env. For a simulated platform it loads the simulated device from its
// device file and sets its policy digest from the pod's initdata annotation
// (DESIGN.md §7), as the hypervisor would.
func NewIssuer(env *initenv.Config, log *slog.Logger) (attest.Issuer, error) {
	switch env.Platform {
	case attest.PlatformSNP:
		return snp.NewIssuer(snp.IssuerConfig{Logger: log}), nil
	case attest.PlatformTDX:
		return tdx.NewIssuer(tdx.IssuerConfig{Logger: log}), nil
	case attest.PlatformSimulatedSNP:
		hostData, err := simHostData(env.SimInitDataFile)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(env.SimDeviceFile)
		if err != nil {
			return nil, fmt.Errorf("reading the simulated device file (%s): %w", initenv.EnvSimDeviceFile, err)
		}
		dev, err := sim.ParseSNPDeviceFile(data, hostData)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", initenv.EnvSimDeviceFile, err)
		}
		ic := dev.IssuerConfig() // the device's TSM and the CRL of its device file
		ic.Logger = log
		return snp.NewIssuer(ic), nil
	}
	return nil, fmt.Errorf("%s %q: no simulated device for this platform in a pod", initenv.EnvPlatform, env.Platform)
}

func simHostData(path string) ([32]byte, error) {
	ann, err := os.ReadFile(path) //nolint:gosec // the downward-API file the webhook injects
	if err != nil {
		return [32]byte{}, fmt.Errorf("reading the pod's initdata annotation (%s): %w", initenv.EnvSimInitDataFile, err)
	}
	d, err := sim.InitDataDigest(ann)
	if err != nil {
		return [32]byte{}, fmt.Errorf("the pod's initdata annotation (%s): %w", initenv.EnvSimInitDataFile, err)
	}
	return d, nil
}
