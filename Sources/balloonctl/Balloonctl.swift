import ArgumentParser
@main struct Balloonctl: ParsableCommand { func run() {} }
