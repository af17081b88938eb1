/// Finds the balloons: through libudev on the live system, by walking the
/// sysfs tree of a snapshot (`--root`). Both give the same answer for the
/// same tree (the umockdev tests hold them to it). No balloon is `[]`.
public enum Discovery {
  public static func discover(root: Root) throws(SourceError) -> [BalloonDevice] {
    if root.isLive { return try UdevDiscovery().discover() }
    return try SysfsDiscovery(root: root).discover()
  }
}
