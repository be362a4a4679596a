from sat_frontends.jp.completion import write_files

write_files()
