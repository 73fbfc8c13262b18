//! `flash build`: compile the project's components and write the manifest and artifact.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use flash::build::{self, BuildOutput, Reporter};
use flash::project::Project;
use indicatif::{ProgressBar, ProgressStyle};

/// Build the app: components → `.flash/flash_manifest.json` + `.flash/artifact.tar.gz`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Project directory (default: the nearest directory with a flash.toml).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub project: Option<PathBuf>,

    /// Then run the whole app locally as it would be deployed: a throwaway control plane,
    /// one `flash-host` per resource config plus the mothership (on --preview-port), all
    /// on loopback. Ctrl+C stops every process and deletes the control plane's data.
    #[arg(long)]
    pub preview: bool,

    /// Port of the mothership in preview.
    #[arg(
        long,
        default_value_t = 8000,
        value_name = "PORT",
        requires = "preview"
    )]
    pub preview_port: u16,
}

impl BuildArgs {
    pub async fn run(self) -> Result<()> {
        let start = self.project.unwrap_or_else(|| PathBuf::from("."));
        let project = Project::discover(&start)?;
        if project.implicit {
            println!(
                "no flash.toml: building the Python modules of {} as app `{}`",
                project.root.display(),
                project.name()
            );
        }
        let output = {
            let reporter = SpinnerReporter::new();
            build::build(&project, &reporter).await?
        };
        print_summary(&project, &output);
        if self.preview {
            super::preview::run(&project, &output, self.preview_port).await?;
        }
        Ok(())
    }
}

/// Draws one spinner line with the latest toolchain output while components build.
pub struct SpinnerReporter {
    bar: ProgressBar,
}

impl SpinnerReporter {
    pub fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:.dim}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    /// Prints a line above the spinner, or on stderr when there is no terminal to draw
    /// the spinner on (CI logs keep every line).
    fn println(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Default for SpinnerReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for SpinnerReporter {
    fn component_started(&self, name: &str) {
        self.bar.reset_elapsed();
        self.bar.set_prefix(format!("building {name}"));
        self.bar.set_message("");
    }
    fn component_output(&self, _name: &str, line: &str) {
        // Warnings and notes stay on screen; the rest is progress that the next line
        // replaces (all of it stays in logs without a terminal).
        if self.bar.is_hidden() || line.starts_with("warning:") || line.starts_with("note:") {
            self.println(format!("  {}", line.trim_end()));
        } else {
            self.bar.set_message(line.trim().to_string());
        }
    }
    fn component_finished(&self, name: &str, elapsed: Duration) {
        self.println(format!(
            "  built component {name} in {:.1}s",
            elapsed.as_secs_f64()
        ));
    }
    fn scanning(&self, name: &str, cached: bool) {
        self.bar.set_prefix(format!("scanning {name}"));
        self.bar.set_message(if cached {
            "unchanged"
        } else {
            "loading with wasmtime and calling describe"
        });
        if !cached {
            self.println(format!("  scanned component {name}"));
        }
    }
}

impl Drop for SpinnerReporter {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

pub fn print_summary(project: &Project, out: &BuildOutput) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["resource", "type", "function", "route", "component"]);
    for (name, resource) in &out.manifest.resources {
        for f in &resource.functions {
            let route = match (&f.http_method, &f.http_path) {
                (Some(m), Some(p)) => format!("{m} {p}"),
                _ => "queue".to_string(),
            };
            let function = if f.is_async {
                format!("{} (async)", f.name)
            } else {
                f.name.clone()
            };
            table.add_row(vec![
                name.clone(),
                resource.resource_type.as_str().to_string(),
                function,
                route,
                f.component.clone(),
            ]);
        }
    }
    println!("{table}");
    let rel = |p: &std::path::Path| {
        p.strip_prefix(&project.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    println!(
        "{} {} ({} resources, {} functions) in {:.1}s",
        if out.up_to_date {
            "Up to date:"
        } else {
            "Built"
        },
        project.name(),
        out.manifest.resources.len(),
        out.manifest.function_registry.len(),
        out.elapsed.as_secs_f64()
    );
    println!("  manifest  {}", rel(&out.manifest_path));
    println!(
        "  artifact  {} ({:.1} KiB, sha256 {})",
        rel(&out.artifact_path),
        out.artifact_size as f64 / 1024.0,
        out.artifact_sha256
    );
    // Who will hold the API key: say it, so that a missed call is not a surprise later.
    let callers: Vec<&str> = out
        .manifest
        .resources
        .iter()
        .filter(|(_, r)| r.makes_remote_calls)
        .map(|(name, _)| name.as_str())
        .collect();
    if out.manifest.resources.len() > 1 {
        if callers.is_empty() {
            println!("  peer calls from no resource (no worker gets the API key)");
        } else {
            println!(
                "  peer calls from {} (their workers get the API key that peer calls need)",
                callers.join(", ")
            );
        }
    }
}
