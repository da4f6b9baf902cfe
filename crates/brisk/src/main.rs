//! `brisk`: one binary, subcommands in the style of `vllm serve` / `vllm bench serve`.
//!
//! This file is glue: it parses the command line (clap, every flag also an environment
//! variable) and hands validated settings to the library crates.

mod generate;
mod latency_cache;
mod loaded_model;
mod model_fetch;
mod profile;
mod route;
mod serve;
mod startup;
mod step_log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "brisk",
    version,
    about = "An LLM inference server that keeps its latency promises"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the model behind an OpenAI-compatible HTTP API.
    Serve(Box<serve::ServeArgs>),
    /// Generate one completion and print it with timing (for checks).
    Generate(generate::GenerateArgs),
    /// Download and verify the default model (SmolLM2-135M-Instruct Q4_1) into the models
    /// directory, then print its path.
    Download {
        /// Print nothing but the path.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Benchmark any OpenAI-compatible server: TTFT, TPOT, ITL, goodput, SLO attainment.
    Bench(Box<brisk_bench::BenchArgs>),
    /// Measure this machine's step latency with the model and save the fitted latency model.
    Profile(profile::ProfileArgs),
    /// Simulate the scheduler on a virtual clock with a latency model, on one replica or on a
    /// fleet behind the router (`--replicas`): `brisk bench`'s workloads and report, in seconds
    /// instead of hours.
    Sim(Box<brisk_sim::SimArgs>),
    /// Route the OpenAI API over brisk replicas (listed, or found in etcd) by predicted time
    /// to first token over their cached prefixes and queues.
    Route(Box<route::RouteArgs>),
}

/// `--model` shared by the subcommands that load a model.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A GGUF file or a Hugging Face directory (config.json, *.safetensors, tokenizer.json).
    /// Without it, the default model is used, fetched on first use.
    #[arg(long, env = "BRISK_MODEL")]
    pub model: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRISK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colors only on a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // `brisk sim` takes `brisk bench`'s flags, but there is no server to name, and the flags
    // about talking to one do not apply (hidden; matched by name so that a renamed bench flag
    // only stays visible instead of breaking the binary).
    const NOT_FOR_SIM: [&str; 10] = [
        "url",
        "model",
        "prompts",
        "endpoint",
        "prompt_format",
        "tokenizer_model",
        "request_timeout",
        "max_concurrency",
        "no_progress",
        "server_tokenizer",
    ];
    let matches = Cli::command()
        .mut_subcommand("sim", |c| {
            c.mut_args(|a| {
                if NOT_FOR_SIM.contains(&a.get_id().as_str()) {
                    a.required(false).hide(true)
                } else {
                    a
                }
            })
            .mut_subcommand("plot", |p| p.hide(true))
        })
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Download { quiet } => model_fetch::ensure(&model_fetch::DEFAULT_MODEL, quiet)
            .map(|p| println!("{}", p.display())),
        Command::Bench(args) => brisk_bench::run(&args).map_err(Into::into),
        Command::Profile(args) => profile::run(&args),
        Command::Sim(args) => brisk_sim::run(&args).map_err(Into::into),
        Command::Route(args) => route::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brisk: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
