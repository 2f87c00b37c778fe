//! `nacre-image`: build, inspect and compare nacre node images.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(
    name = "nacre-image",
    about = "Build, inspect and compare nacre node images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Partitions, UKI sections, stub version, cmdline, root hash (UKI and verity partition) and
    /// predicted measurements of a disk image or a bare UKI. No root needed.
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Where two images (or two UKIs) differ: GPT, partitions by byte range, ESP files, UKI
    /// sections. Exit status 1 when they differ, 0 when identical.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build nacre's initrd from a root tree: nacre-init as /init, its shared libraries (ELF
    /// closure inside ROOT plus --dlopen), the stage 1 modules with their dependencies and the
    /// module index files; a deterministic newc archive. Or, with --print-libraries, only the
    /// library set (paths inside ROOT as the loader names them), one a line.
    Initrd {
        /// A tree with /usr/lib/nacre/nacre-init and /usr/lib/modules/REL.
        root: PathBuf,
        /// Where to write the archive (not with --print-libraries).
        out: Option<PathBuf>,
        /// Stage 1 modules, comma- or space-separated (default virtio_pci virtio_blk dm-verity
        /// erofs); written to /etc/nacre/modules.
        #[arg(long)]
        modules: Option<String>,
        /// Sonames nacre-init loads at run time, in ROOT's /usr/lib/x86_64-linux-gnu (default
        /// libtss2-tcti-device.so.0); an empty string for none.
        #[arg(long)]
        dlopen: Option<String>,
        /// The kernel release (default: the only one in ROOT/usr/lib/modules).
        #[arg(long)]
        kernel_release: Option<String>,
        /// Only print the library closure.
        #[arg(long)]
        print_libraries: bool,
    },
    /// The shared libraries a set of programs in ROOT loads (ELF closure inside ROOT; --dlopen
    /// sonames are loaded by the first program): what the cut-down root keeps for them.
    RootLibs {
        root: PathBuf,
        /// Paths inside ROOT, e.g. /usr/lib/nacre/nacre-init /usr/bin/containerd.
        #[arg(required = true)]
        programs: Vec<String>,
        #[arg(long)]
        dlopen: Option<String>,
    },
    /// What a finished root tree holds: bytes, files, executables (ELF programs and scripts)
    /// and shared libraries.
    RootReport {
        root: PathBuf,
        /// Paths (relative to ROOT) left out: in the build tree, not in the root partition.
        #[arg(long)]
        skip: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The package lock: `write` it from a build's mkosi manifest, or `check` a build against
    /// it (exit 1 and the differences when it drifted).
    Lock {
        #[arg(value_parser = ["write", "check"])]
        action: String,
        /// The build's mkosi manifest (OUTDIR/manifest.json).
        manifest: PathBuf,
        /// The lock file (mkosi.conf.d/packages.lock).
        lock: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build the image: runs scripts/build-image.sh (from the source tree this binary was built
    /// in, or --source) with the remaining arguments; it prints the progress of each step.
    Build {
        /// The nacre source tree (default: where nacre-image was built).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Arguments for scripts/build-image.sh: OUTDIR [--variant NAME] [--cache DIR] ...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn run() -> Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Inspect { image, json } => {
            let i = nacre_image::inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                nacre_image::inspect::print(&i);
            }
            Ok(if i.roothash_matches == Some(false) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Diff { a, b, json } => {
            let diffs = nacre_image::diff::diff(&a, &b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diffs)?);
            } else if diffs.is_empty() {
                println!("identical");
            } else {
                nacre_image::diff::print(&diffs);
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Initrd {
            root,
            out,
            modules,
            dlopen,
            kernel_release,
            print_libraries,
        } => {
            use nacre_image::initrd;
            let mut opts = initrd::Options {
                kernel_release,
                ..Default::default()
            };
            if let Some(m) = modules {
                opts.modules = initrd::split_list(&m);
            }
            if let Some(d) = dlopen {
                opts.dlopen = initrd::split_list(&d);
            }
            if print_libraries {
                if out.is_some() {
                    bail!("--print-libraries takes no OUT");
                }
                for l in initrd::libraries(&root, &opts.dlopen)? {
                    println!("{l}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let Some(out) = out else {
                bail!("initrd: need OUT (or --print-libraries)");
            };
            let built = initrd::build(&root, &opts)?;
            let size = built.tree.write_file(&out)?;
            let files = built
                .tree
                .nodes()
                .values()
                .filter(|n| **n != initrd::Node::Dir)
                .count();
            eprintln!(
                "nacre-image initrd: {}: {files} files, {} modules for {}, {} KiB",
                out.display(),
                built.modules.len(),
                built.kernel_release,
                size.div_ceil(1024)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RootLibs {
            root,
            programs,
            dlopen,
        } => {
            let dlopen = dlopen
                .map(|d| nacre_image::initrd::split_list(&d))
                .unwrap_or_default();
            for l in nacre_image::rootfs::libraries(&root, &programs, &dlopen)? {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RootReport { root, skip, json } => {
            let skip: Vec<&str> = skip.iter().map(|s| s.trim_matches('/')).collect();
            let rep = nacre_image::rootfs::report(&root, &skip)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "root: {} bytes ({:.1} MiB) in {} files, {} symlinks, {} directories",
                    rep.bytes,
                    rep.bytes as f64 / 1048576.0,
                    rep.files,
                    rep.symlinks,
                    rep.directories
                );
                println!("executables ({}):", rep.executables.len());
                for e in &rep.executables {
                    println!("  {e}");
                }
                println!("shared libraries: {}", rep.libraries.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lock {
            action,
            manifest,
            lock,
            json,
        } => {
            use nacre_image::rootfs;
            let built = rootfs::manifest_packages(&manifest)?;
            if action == "write" {
                let tmp = lock.with_extension("lock.tmp");
                std::fs::write(&tmp, rootfs::lock_text(&built))
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &lock)
                    .with_context(|| format!("writing {}", lock.display()))?;
                eprintln!(
                    "nacre-image lock: {} packages -> {}",
                    built.len(),
                    lock.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let drift = rootfs::lock_drift(&rootfs::read_lock(&lock)?, &built);
            if json {
                println!("{}", serde_json::to_string_pretty(&drift)?);
            } else {
                for (n, l, b) in &drift.changed {
                    println!("changed {n}: locked {l}, built {b}");
                }
                for (n, v) in &drift.added {
                    println!("added {n} {v} (not in the lock)");
                }
                for (n, v) in &drift.removed {
                    println!("removed {n} {v} (locked, not built)");
                }
                if drift.is_empty() {
                    println!("{} packages as locked", built.len());
                }
            }
            Ok(if drift.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Build { source, args } => {
            let src =
                source.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")));
            let script = src.join("scripts/build-image.sh");
            if !script.is_file() {
                bail!("no {} (pass --source)", script.display());
            }
            let st = Command::new(&script)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            Ok(if st.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(st.code().unwrap_or(1).clamp(1, 255) as u8)
            })
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nacre-image: {e:#}");
            ExitCode::from(2)
        }
    }
}
