package cmd

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Reference-value presets of --reference-values.
const (
	refSNP          = "snp"
	refTDX          = "tdx"
	refAKSSNP       = "aks-snp"
	refSNPSimulated = "snp-simulated"
	refTDXSimulated = "tdx-simulated"
)

var refPresets = []string{refSNP, refTDX, refAKSSNP, refSNPSimulated, refTDXSimulated}

// fillIn marks a field the owner must fill in. It is not valid hex, so
// manifest.Parse (and so contrast set) refuses the manifest, naming the
// field's JSON path, until it is replaced.
const fillIn = "FILL-IN: "

// placeholder is a field of a preset the owner must fill in.
type placeholder struct {
	field, what string
}

// presetPlaceholders are the fields of each hardware preset that depend on
// the guest image and hardware and cannot be known here.
var presetPlaceholders = map[string][]placeholder{
	refSNP: {
		{"ProductName", "Milan or Genoa, the EPYC generation of your hosts"},
		{"MinimumTCB", "the minimum TCB you accept: {BootloaderVersion, TEEVersion, SNPVersion, MicrocodeVersion} from AMD's security bulletins for your firmware"},
		{"TrustedMeasurement", "the launch measurement of the Contrast guest image (48 bytes hex, from the image's release or sev-snp-measure)"},
	},
	refAKSSNP: {
		{"ProductName", "Milan or Genoa, the EPYC generation of the AKS node pool"},
		{"MinimumTCB", "the minimum TCB you accept: {BootloaderVersion, TEEVersion, SNPVersion, MicrocodeVersion}"},
		{"TrustedMeasurement", "the launch measurement of the AKS confidential-containers guest (48 bytes hex)"},
	},
	refTDX: {
		{"MrTd", "MRTD of the guest firmware (48 bytes hex)"},
		{"MrSeam", "MRSEAM of the TDX module of your hosts (48 bytes hex)"},
		{"Rtmrs", "RTMR0..3 of the guest image (4 × 48 bytes hex)"},
	},
}

// referenceValues returns the reference values of a preset, and for the
// hardware presets the JSON paths (relative to the manifest) that must be
// filled in. Simulated presets take the simulated authority the Coordinator
// was started with (created if missing).
func referenceValues(preset, simAuthority, simMeasurement string) (manifest.ReferenceValues, []placeholder, error) {
	var rv manifest.ReferenceValues
	ph := presetPlaceholders[preset]
	var meas []byte
	if simMeasurement != "" {
		b, err := hex.DecodeString(simMeasurement)
		if err != nil || len(b) != 48 {
			return rv, nil, usageErrorf("--sim-measurement %q: want 48 bytes hex", simMeasurement)
		}
		if preset != refSNPSimulated && preset != refTDXSimulated {
			return rv, nil, usageErrorf("--sim-measurement is for the simulated presets, not %q", preset)
		}
		meas = b
	}
	switch preset {
	case refSNP, refAKSSNP:
		r := snp.ReferenceValues{Name: preset, Platform: "Metal-QEMU-SNP"}
		r.GuestPolicy.SMT = true
		if preset == refAKSSNP {
			r.Platform = "AKS-CLH-SNP"
		}
		rv.SNP = []snp.ReferenceValues{r}
	case refTDX:
		rv.TDX = []tdx.ReferenceValues{{Name: preset, Platform: "Metal-QEMU-TDX"}}
	case refSNPSimulated:
		if simAuthority == "" {
			return rv, nil, usageErrorf("--reference-values %s needs --sim-authority: the simulated authority file the Coordinator runs with", preset)
		}
		a, err := sim.LoadOrCreateSNPAuthority(simAuthority)
		if err != nil {
			return rv, nil, usageErrorf("--sim-authority %s: %w", simAuthority, err)
		}
		dev, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
		if err != nil {
			return rv, nil, withCode(ExitFailure, fmt.Errorf("simulated SNP device: %w", err))
		}
		r := dev.ReferenceValues()
		r.AllowedChipIDs = nil // every device of the authority: one per pod
		r.Name = preset
		if meas != nil {
			r.TrustedMeasurement = meas
		} else {
			ph = append(ph, placeholder{"TrustedMeasurement", "the launch measurement the simulated TEE reports (the Coordinator's --sim-measurement, 48 bytes hex), or pass --sim-measurement"})
		}
		rv.SNP = []snp.ReferenceValues{r}
	case refTDXSimulated:
		if simAuthority == "" {
			return rv, nil, usageErrorf("--reference-values %s needs --sim-authority: the simulated authority file the Coordinator runs with", preset)
		}
		a, err := sim.LoadOrCreateTDXAuthority(simAuthority)
		if err != nil {
			return rv, nil, usageErrorf("--sim-authority %s: %w", simAuthority, err)
		}
		dev, err := a.NewDevice(sim.DefaultTDXDeviceConfig())
		if err != nil {
			return rv, nil, withCode(ExitFailure, fmt.Errorf("simulated TDX device: %w", err))
		}
		r := dev.ReferenceValues()
		r.AllowedPIIDs = nil
		r.Name = preset
		if meas != nil {
			r.MrTd = meas
		} else {
			ph = append(ph, placeholder{"MrTd", "the MRTD the simulated TEE reports (the Coordinator's --sim-measurement, 48 bytes hex), or pass --sim-measurement"})
		}
		// The simulated TD draws MRSEAM and RTMRs at random per process.
		ph = append(ph,
			placeholder{"MrSeam", "the MRSEAM the simulated TD reports (48 bytes hex)"},
			placeholder{"Rtmrs", "the RTMRs the simulated TD reports (4 × 48 bytes hex)"})
		rv.TDX = []tdx.ReferenceValues{r}
	default:
		return rv, nil, usageErrorf("--reference-values %q: want one of %s", preset, strings.Join(refPresets, ", "))
	}
	return rv, ph, nil
}

// markPlaceholders writes "FILL-IN: ..." into the fields of the preset that
// the owner must fill in, and returns their JSON paths.
func markPlaceholders(manifestJSON []byte, ph []placeholder) ([]byte, []string, error) {
	if len(ph) == 0 {
		return manifestJSON, nil, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(manifestJSON, &doc); err != nil {
		return nil, nil, fmt.Errorf("decoding manifest: %w", err)
	}
	rv, _ := doc["ReferenceValues"].(map[string]any)
	var paths []string
	for _, platform := range []string{"snp", "tdx"} {
		entries, _ := rv[platform].([]any)
		for i, e := range entries {
			entry, _ := e.(map[string]any)
			for _, p := range ph {
				entry[p.field] = fillIn + p.what
				paths = append(paths, fmt.Sprintf("ReferenceValues.%s[%d].%s", platform, i, p.field))
			}
		}
	}
	slices.Sort(paths)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return out, paths, nil
}
