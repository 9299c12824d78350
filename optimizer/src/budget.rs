//! A device class's budgets (`memoryBudgetMib`, `latencyBudgetMs`) and whether this machine's
//! measurements can check them. Pure decisions: the gate measures, these say what the figures
//! mean for a candidate that reached the accuracy requirement.

use crate::report::Measured;
use edgefleet_api::deviceclass::{Arch, DeviceClassSpec, ExecutionProvider};
use serde::Serialize;

/// One budget of a device class, named as the DeviceClass spells the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Budget {
    #[serde(rename = "latencyBudgetMs")]
    Latency,
    #[serde(rename = "memoryBudgetMib")]
    Memory,
}

impl Budget {
    pub fn field(self) -> &'static str {
        match self {
            Budget::Latency => "latencyBudgetMs",
            Budget::Memory => "memoryBudgetMib",
        }
    }
}

/// The budgets of a class, as the gate applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    pub latency_ms: Option<f64>,
    pub memory_mib: Option<u32>,
}

impl Budgets {
    pub fn of(spec: &DeviceClassSpec) -> Self {
        Self {
            latency_ms: spec.latency_budget_ms,
            memory_mib: spec.memory_budget_mib,
        }
    }
}

/// How a budget was applied, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    pub budget: Budget,
    pub limit: f64,
    /// Whether candidates were held to it.
    pub checked: bool,
    /// Why it was not checked, or where its figures were measured.
    pub note: String,
    /// Candidates (techniques) it refused.
    pub refused: Vec<String>,
}

/// The machine the gate runs on, as far as latency goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub arch: Arch,
    /// The binary runs under an emulator (qemu-user) of `arch` on another architecture.
    pub emulated: bool,
}

impl Machine {
    /// This process, with `/proc/cpuinfo`'s text.
    pub fn here(cpuinfo: &str) -> Option<Self> {
        let arch = Arch::of_rust(std::env::consts::ARCH)?;
        Some(Self {
            arch,
            emulated: cpuinfo_arch(cpuinfo).is_some_and(|real| real != arch),
        })
    }
}

/// The architecture `/proc/cpuinfo` describes: the kernel's, which under qemu-user is not the
/// emulated program's (x86 kernels list `vendor_id` and `flags`, arm64 kernels `CPU implementer`
/// and `Features`).
pub fn cpuinfo_arch(cpuinfo: &str) -> Option<Arch> {
    let has = |key: &str| {
        cpuinfo
            .lines()
            .any(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
    };
    if has("vendor_id") && has("flags") {
        Some(Arch::Amd64)
    } else if has("CPU implementer") {
        Some(Arch::Arm64)
    } else {
        None
    }
}

/// Why latency measured on `machine` does not stand for the class's devices, if it does not.
pub fn latency_unrepresentative(
    spec: &DeviceClassSpec,
    machine: Option<Machine>,
) -> Option<String> {
    if spec.execution_provider != ExecutionProvider::Cpu {
        return Some(format!(
            "measured on this machine's CPU, while the class runs on executionProvider {}",
            spec.execution_provider.as_str()
        ));
    }
    let Some(machine) = machine else {
        return Some(format!(
            "measured on an architecture ({}) no device class names",
            std::env::consts::ARCH
        ));
    };
    if machine.emulated {
        return Some(format!(
            "measured under emulation of {}: not the device's latency",
            machine.arch.as_str()
        ));
    }
    if !spec.arch.contains(&machine.arch) {
        return Some(format!(
            "measured on {}, while the class's devices are {}",
            machine.arch.as_str(),
            spec.arch
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    None
}

/// The budgets a measured candidate exceeds, each with its reason. Latency is held to its
/// budget only when `latency_checked`; memory only when it was measured.
pub fn exceeded(budgets: &Budgets, m: &Measured, latency_checked: bool) -> Vec<(Budget, String)> {
    let mut out = Vec::new();
    if let Some(limit) = budgets.latency_ms
        && latency_checked
        && m.latency_ms_p50 > limit
    {
        out.push((
            Budget::Latency,
            format!(
                "p50 {:.3} ms exceeds latencyBudgetMs {limit}",
                m.latency_ms_p50
            ),
        ));
    }
    if let (Some(limit), Some(mib)) = (budgets.memory_mib, m.memory_mib)
        && mib > f64::from(limit)
    {
        out.push((
            Budget::Memory,
            format!("uses {mib:.1} MiB, over memoryBudgetMib {limit}"),
        ));
    }
    out
}

/// How each set budget is applied: checked, or skipped and why.
pub fn applied(
    budgets: &Budgets,
    latency_note: Option<&str>,
    memory_measured: bool,
    here: &str,
) -> Vec<Applied> {
    let mut out = Vec::new();
    if let Some(limit) = budgets.latency_ms {
        out.push(Applied {
            budget: Budget::Latency,
            limit,
            checked: latency_note.is_none(),
            note: match latency_note {
                Some(why) => format!("not checked: latency {why}"),
                None => format!("p50 of single-sample runs, measured on {here}"),
            },
            refused: Vec::new(),
        });
    }
    if let Some(limit) = budgets.memory_mib {
        out.push(Applied {
            budget: Budget::Memory,
            limit: f64::from(limit),
            checked: memory_measured,
            note: if memory_measured {
                format!(
                    "anonymous memory a loaded session adds after one inference, in a fresh process on {here}"
                )
            } else {
                "not checked: memory is only measured by the optimizer binary".into()
            },
            refused: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(arch: Vec<Arch>, provider: ExecutionProvider) -> DeviceClassSpec {
        DeviceClassSpec {
            node_selector: BTreeMap::new(),
            arch,
            runtime: Default::default(),
            execution_provider: provider,
            precisions: vec![edgefleet_api::deviceclass::Precision::Int8],
            integer_only: false,
            memory_budget_mib: None,
            latency_budget_ms: None,
        }
    }

    const X86: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse2\n";
    const ARM: &str =
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n";

    #[test]
    fn cpuinfo_names_the_kernels_architecture() {
        assert_eq!(cpuinfo_arch(X86), Some(Arch::Amd64));
        assert_eq!(cpuinfo_arch(ARM), Some(Arch::Arm64));
        assert_eq!(cpuinfo_arch(""), None);
    }

    #[test]
    fn latency_stands_for_a_cpu_class_of_this_architecture_only() {
        let native = Machine {
            arch: Arch::Amd64,
            emulated: false,
        };
        let both = spec(vec![Arch::Arm64, Arch::Amd64], ExecutionProvider::Cpu);
        assert_eq!(latency_unrepresentative(&both, Some(native)), None);
        let arm = spec(vec![Arch::Arm64], ExecutionProvider::Cpu);
        let why = latency_unrepresentative(&arm, Some(native)).unwrap();
        assert!(why.contains("amd64") && why.contains("arm64"), "{why}");
        let emulated = Machine {
            arch: Arch::Arm64,
            emulated: true,
        };
        let why = latency_unrepresentative(&arm, Some(emulated)).unwrap();
        assert!(why.contains("emulation"), "{why}");
        let gpu = spec(vec![Arch::Amd64], ExecutionProvider::Cuda);
        let why = latency_unrepresentative(&gpu, Some(native)).unwrap();
        assert!(why.contains("executionProvider cuda"), "{why}");
    }

    #[test]
    fn a_candidate_over_a_budget_is_refused_with_the_field_and_figures() {
        let m = Measured {
            latency_ms_p50: 2.5,
            memory_mib: Some(12.0),
            ..Default::default()
        };
        let both = Budgets {
            latency_ms: Some(2.0),
            memory_mib: Some(8),
        };
        let over = exceeded(&both, &m, true);
        assert_eq!(
            over.iter().map(|o| o.0).collect::<Vec<_>>(),
            [Budget::Latency, Budget::Memory]
        );
        assert!(over[0].1.contains("2.500 ms") && over[0].1.contains("latencyBudgetMs 2"));
        assert!(over[1].1.contains("12.0 MiB") && over[1].1.contains("memoryBudgetMib 8"));
        // An unrepresentative latency is not held to the budget.
        assert_eq!(exceeded(&both, &m, false).len(), 1);
        // Within budgets, or none set: nothing refused.
        let roomy = Budgets {
            latency_ms: Some(2.5),
            memory_mib: Some(12),
        };
        assert!(exceeded(&roomy, &m, true).is_empty());
        assert!(exceeded(&Budgets::default(), &m, true).is_empty());
    }

    #[test]
    fn the_report_says_how_each_budget_was_applied() {
        let b = Budgets {
            latency_ms: Some(5.0),
            memory_mib: Some(64),
        };
        let a = applied(&b, Some("measured under emulation of arm64"), true, "arm64");
        assert_eq!(a.len(), 2);
        assert!(!a[0].checked && a[0].note.contains("emulation"));
        assert!(a[1].checked && a[1].limit == 64.0);
        let a = applied(&b, None, false, "amd64");
        assert!(a[0].checked && a[0].note.contains("amd64"));
        assert!(!a[1].checked, "{:?}", a[1]);
        assert!(applied(&Budgets::default(), None, true, "amd64").is_empty());
    }
}
