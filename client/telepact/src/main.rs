#[tokio::main]
async fn main() {
    let code = st_peter_telepact::cli::main_with_args(std::env::args_os()).await;
    std::process::exit(code);
}
