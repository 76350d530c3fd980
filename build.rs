// The built-in collectors are embedded from collectors/ (include_dir); rebuild when any file there changes or is
// added, which the macro alone does not notice.
fn main() {
    println!("cargo:rerun-if-changed=collectors");
}
