//! kcred CSI node driver.
