// Put libtorch's lib folder on the rpath of every binary (psla, tests), so that they run without
// LD_LIBRARY_PATH. `./dev` sets LIBTORCH; tch's own build script links against the same folder.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
