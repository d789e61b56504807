//! The WebDriver client drives the real desktop app: `tauri-driver` under Xvfb opens the app on a
//! fresh home, the page shows "Ferry", and a screenshot of the window is a real PNG.

use anyhow::{ensure, Context, Result};
use ferry_tests::webdriver::{tauri_driver_path, Driver, Xvfb};
use ferry_tests::{app_bin, WAIT};

#[test]
fn webdriver_opens_the_app_and_takes_a_screenshot() -> Result<()> {
    if tauri_driver_path().is_none() {
        println!("skipped: tauri-driver is not installed (cargo install tauri-driver --locked)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let home_str = home.to_str().context("temp path is not UTF-8")?;
    let app = app_bin()?;

    let x = Xvfb::start()?;
    let driver = Driver::start(&[("DISPLAY", &x.display()), ("FERRY_HOME", home_str)])?;
    let conns = driver.connections();
    let session = driver.session(&app, &[])?;

    session.wait_text("body", "Ferry", WAIT)?;
    let title = session.execute("return document.title", &[])?;
    println!("page title: {title}");

    let shot = dir.path().join("window.png");
    session.screenshot(&shot)?;
    let png = std::fs::read(&shot)?;
    ensure!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG screenshot ({} bytes)",
        png.len()
    );
    if let Some(keep) = std::env::var_os("FERRY_SCREENSHOT_DIR") {
        std::fs::copy(
            &shot,
            std::path::Path::new(&keep).join("webdriver_smoke.png"),
        )?;
    }

    session.close()?;
    println!(
        "connections opened: {conns} while starting, {} in all",
        driver.connections()
    );
    ensure!(
        driver.connections() == conns,
        "the session used {} new connections instead of keeping one alive",
        driver.connections() - conns
    );
    Ok(())
}
