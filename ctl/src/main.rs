//! basaltctl: see [`basaltctl::cli`].

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = std::env::var("BASALT_ENDPOINT").ok().filter(|e| !e.is_empty());
    let code = basaltctl::cli::run(&args, endpoint, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
